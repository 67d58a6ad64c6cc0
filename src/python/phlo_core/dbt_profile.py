"""The dbt profile every location's project shares (`phlo`), derived from the same settings
that open the lakehouse, so that dbt and Python see the same catalog."""

from pathlib import Path
from typing import Any

import yaml

from phlo_core.lakehouse import CATALOG
from phlo_core.locks import write_atomically
from phlo_core.settings import PhloSettings

PROFILE = "phlo"


def profile_document(settings: PhloSettings) -> dict[str, Any]:
    return {
        PROFILE: {
            "target": "lake",
            "outputs": {
                "lake": {
                    "type": "duckdb",
                    "path": ":memory:",
                    "database": CATALOG,
                    "schema": "main",
                    "threads": 1,
                    "config_options": {
                        "extension_directory": str(settings.extension_directory),
                        "autoinstall_known_extensions": False,
                        "autoload_known_extensions": True,
                    },
                    "settings": {"TimeZone": "UTC"},
                    "attach": [
                        {
                            "path": f"ducklake:{settings.lake_catalog}",
                            "alias": CATALOG,
                            "is_ducklake": True,
                            "options": {
                                "data_path": settings.lake_data_path,
                                **(
                                    {"override_data_path": True}
                                    if settings.lake_moves_with_home
                                    else {}
                                ),
                            },
                        }
                    ],
                }
            },
        }
    }


def write_profile(settings: PhloSettings) -> Path:
    profiles_dir = settings.dbt_dir
    profiles_dir.mkdir(parents=True, exist_ok=True)
    path = profiles_dir / "profiles.yml"
    text = yaml.safe_dump(profile_document(settings), sort_keys=False)
    if not path.exists() or path.read_text() != text:
        write_atomically(path, text)
    return profiles_dir
