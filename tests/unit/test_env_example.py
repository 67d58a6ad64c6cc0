from __future__ import annotations

import re
from pathlib import Path

from phlo_core.settings import PhloSettings, load_settings, location_models

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def every_setting() -> set[str]:
    """The core's settings and those of every location in the workspace (the
    `LocationSettings` models of its `settings` module)."""
    names = {name.upper() for name in PhloSettings.model_fields}
    for model in location_models(load_settings()):
        names |= {name.upper() for name in model.model_fields}
    return names


def test_env_example_documents_every_setting() -> None:
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert "NIGHTSCOUT_URL" in every_setting()
    assert documented == every_setting()
