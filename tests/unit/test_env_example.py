from __future__ import annotations

import re
from pathlib import Path

from phlo_core.settings import PhloSettings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def test_env_example_documents_every_setting() -> None:
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert documented == {name.upper() for name in PhloSettings.model_fields}
