from __future__ import annotations

import re

from phlo_core.settings import PhloSettings, load_settings, location_models
from phlo_core.workspace import ENV_EXAMPLE, env_example, location_folder, location_refs

SETTING_LINE = re.compile(r"^#? ?([A-Z][A-Z0-9_]+)=", re.MULTILINE)


def documented(text: str) -> set[str]:
    return set(SETTING_LINE.findall(text))


def test_the_settings_example_documents_every_setting_of_phlo_and_each_location() -> None:
    settings = load_settings()
    every = {name.upper() for name in PhloSettings.model_fields}
    for model in location_models(settings):
        every |= {name.upper() for name in model.model_fields}
    assert {"NIGHTSCOUT_URL", "WEATHER_PLACES", "INSIGHTS_WEATHER_PLACE"} <= every
    assert documented(env_example(settings)) == every


def test_each_part_documents_its_own_settings_only() -> None:
    """phlo's .env.example holds core's settings; each location's env.example its model's."""
    settings = load_settings()
    assert documented(ENV_EXAMPLE.read_text()) == {n.upper() for n in PhloSettings.model_fields}
    models = {model.__module__: model for model in location_models(settings)}
    for ref in location_refs(settings):
        model = models.get(f"{ref.package}.settings")
        folder = location_folder(ref)
        assert folder is not None
        own = folder / "env.example"
        if model is None:
            assert not own.exists(), f"{ref.name} has no settings model but an env.example"
            continue
        assert documented(own.read_text()) == {n.upper() for n in model.model_fields}, ref.name


def test_the_example_lists_the_locations_in_the_workspace_order() -> None:
    text = env_example(load_settings())
    assert text.startswith(ENV_EXAMPLE.read_text().rstrip("\n"))
    assert text.index("NIGHTSCOUT_URL") < text.index("WEATHER_PLACES")
    assert text.index("WEATHER_PLACES") < text.index("INSIGHTS_WEATHER_PLACE")
