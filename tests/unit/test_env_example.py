from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

from pydantic_settings import BaseSettings

from phlo_core.settings import PhloSettings, load_settings
from phlo_core.workspace import location_refs

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def every_setting() -> set[str]:
    """The core's settings and those of every location in the workspace (its `settings`
    module's pydantic-settings models)."""
    names = {name.upper() for name in PhloSettings.model_fields}
    for ref in location_refs(load_settings()):
        module_name = f"{ref.package}.settings"
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value is not PhloSettings
            ):
                names |= {name.upper() for name in value.model_fields}
    return names


def test_env_example_documents_every_setting() -> None:
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert "NIGHTSCOUT_URL" in every_setting()
    assert documented == every_setting()
