"""The dbt profile every location's project shares (`phlo`), derived from the same settings
that open the lakehouse, so that dbt and Python see the same catalog.

Secrets (the catalog's connection string with its password, the object store's secret key) are
not written into profiles.yml: the profile names environment variables with dbt's
`DBT_ENV_SECRET_` prefix, which dbt scrubs from its logs. They are in the environment only while
dbt runs a command that needs them (`dbt_runner.invoke_dbt`, `secret_environment`), never
because a profile was written or definitions were loaded; a parse needs none (an unset one
reads as empty: parsing connects to nothing)."""

from pathlib import Path
from typing import Any

import yaml

from phlo_core.lakehouse.connect import CATALOG
from phlo_core.lakehouse.locks import write_atomically
from phlo_core.settings import PhloSettings

PROFILE = "phlo"
CATALOG_ENV = "DBT_ENV_SECRET_PHLO_LAKE_CATALOG"
S3_SECRET_ENV = "DBT_ENV_SECRET_PHLO_S3_SECRET"


def _secret(name: str) -> str:
    return "{{ env_var('" + name + "', '') }}"


def secret_environment(settings: PhloSettings) -> dict[str, str]:
    """The environment variables the profile reads its secrets from."""
    env = {}
    if not settings.lake_catalog.startswith("sqlite:"):
        env[CATALOG_ENV] = settings.lake_catalog
    if settings.phlo_s3_secret_access_key is not None:
        env[S3_SECRET_ENV] = settings.phlo_s3_secret_access_key.get_secret_value()
    return env


def _s3_secrets(settings: PhloSettings) -> list[dict[str, Any]]:
    if not settings.lake_on_s3:
        return []
    endpoint, use_ssl = settings.s3_endpoint
    bucket = "s3://" + settings.lake_data_path.removeprefix("s3://").split("/", 1)[0]
    secret: dict[str, Any] = {
        "type": "s3",
        "key_id": settings.phlo_s3_access_key_id,
        "secret": _secret(S3_SECRET_ENV),
        "region": settings.phlo_s3_region,
        "url_style": settings.phlo_s3_url_style,
        "use_ssl": use_ssl,
        "scope": bucket,
    }
    if endpoint:
        secret["endpoint"] = endpoint
    return [secret]


def profile_document(settings: PhloSettings) -> dict[str, Any]:
    threads = {} if settings.duckdb_threads is None else {"threads": settings.duckdb_threads}
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
                    "settings": {"TimeZone": "UTC", **threads},
                    "attach": [
                        {
                            "path": "ducklake:"
                            + (
                                settings.lake_catalog
                                if settings.lake_catalog.startswith("sqlite:")
                                else _secret(CATALOG_ENV)
                            ),
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
                    **({"secrets": _s3_secrets(settings)} if settings.lake_on_s3 else {}),
                }
            },
        }
    }


def write_profile(settings: PhloSettings) -> Path:
    """profiles.yml for the settings (rewritten only when it changed); its folder."""
    profiles_dir = settings.dbt_dir
    profiles_dir.mkdir(parents=True, exist_ok=True)
    path = profiles_dir / "profiles.yml"
    text = yaml.safe_dump(profile_document(settings), sort_keys=False)
    if not path.exists() or path.read_text() != text:
        write_atomically(path, text)
    return profiles_dir
