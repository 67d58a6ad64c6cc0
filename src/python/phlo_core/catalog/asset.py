"""`datahub_metadata`: the catalog kept current by the runs themselves. Downstream of every dbt
project's last models, so a plan that builds models (`phlo materialize a+`, a backfill's tail)
ends with one sync of what changed: the tests' new results, the jobs' last runs, a new column.

It needs a catalog (`phlo_core.needs`): until the home has one (the first `phlo catalog sync`
installs DataHub's environment and writes everything) or DATAHUB_GMS_URL names a server, it
logs that it skipped and does nothing, so a run never waits for DataHub to install."""

import json
from collections.abc import Iterator

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from phlo_core.catalog.sync import sync
from phlo_core.dbt.docs import dbt_projects
from phlo_core.dbt.project import project_manifest
from phlo_core.log import get_logger
from phlo_core.needs import CATALOG_NEED, NEEDS_TAG, missing, needs_met
from phlo_core.resources import LAKEHOUSE, Lakehouse, resource
from phlo_core.runs.engine import SUMMARY_KEY
from phlo_core.settings import PhloSettings

ASSET_NAME = "datahub_metadata"
log = get_logger(__name__)


def last_models(settings: PhloSettings) -> list[AssetKey]:
    """Every dbt project's models that no other model of it reads (its marts, mostly): what
    comes after them comes after every model."""
    keys = set()
    for project in dbt_projects():
        nodes = json.loads(project_manifest(project, settings).read_text())["nodes"]
        models = {uid: n for uid, n in nodes.items() if n["resource_type"] == "model"}
        read = {up for n in models.values() for up in n["depends_on"]["nodes"]}
        keys |= {n["name"] for uid, n in models.items() if uid not in read}
    return [AssetKey(name) for name in sorted(keys)]


def catalog_asset(settings: PhloSettings, group_name: str) -> AssetsDefinition:
    """The asset, after the last models of the projects `settings`' home has parsed."""

    @asset(
        name=ASSET_NAME,
        group_name=group_name,
        deps=last_models(settings),
        output_required=False,
        kinds={"datahub"},
        tags={NEEDS_TAG: CATALOG_NEED},
        required_resource_keys={LAKEHOUSE},
        description=(
            "The metadata catalog (DataHub Lite under PHLO_HOME/catalog, and DATAHUB_GMS_URL "
            "when set) after the models: what changed since the last sync, once per run. "
            "Does nothing until the home has a catalog (`phlo catalog sync`)."
        ),
    )
    def _catalog(context: AssetExecutionContext) -> Iterator[MaterializeResult]:
        settings = resource(context, LAKEHOUSE, Lakehouse).settings
        if not needs_met(settings, CATALOG_NEED):
            log.info(f"catalog skipped: {missing(CATALOG_NEED)}")
            return
        result = sync(settings, instance=context.instance)  # errors: one line, redacted
        written = f"{result.changed} changed" if result.changed else "nothing changed"
        removed = f", {result.removed} soft-deleted" if result.removed else ""
        yield MaterializeResult(
            metadata={
                SUMMARY_KEY: f"catalog: {written}{removed} ({result.seconds:.1f}s)",
                "datasets": result.datasets,
                "lineage edges": result.edges,
                "tests": result.assertions,
                "jobs": result.jobs,
                "changed": result.changed,
                "soft-deleted": result.removed,
            }
        )

    return _catalog
