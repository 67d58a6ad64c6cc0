"""Assets that do nothing until what they need is there: publishing needs the PostgreSQL it
publishes to (a setting), the catalog asset a catalog (the home's, made by the first `phlo
catalog sync`, or a DataHub server). Such an asset carries NEEDS_TAG, whose value names what it
needs; without it the asset logs that it skipped and materializes nothing."""

from __future__ import annotations

from phlo_core.settings import PhloSettings

NEEDS_TAG = "phlo/needs_setting"  # value: a setting's name, or CATALOG_NEED
CATALOG_NEED = "phlo-catalog"
CATALOG_LITE = ("catalog", "datahub-lite.sqlite")  # under PHLO_HOME: DataHub Lite's file


def needs_met(settings: PhloSettings, need: str) -> bool:
    """Whether what an asset needs is there (a setting, phlo's own or a location's, has a
    value; or, for CATALOG_NEED, the home has a catalog or DATAHUB_GMS_URL names a server)."""
    if need == CATALOG_NEED:
        lite = settings.home.joinpath(*CATALOG_LITE)
        return settings.datahub_gms_url is not None or lite.exists()
    key = need.lower()
    return getattr(settings, key, None) is not None or bool(settings.location_values.get(key))


def missing(need: str) -> str:
    """Why an asset needing `need` did nothing, for a user."""
    if need == CATALOG_NEED:
        return "no catalog in this home yet (`phlo catalog sync` makes one)"
    return f"{need} is not set"
