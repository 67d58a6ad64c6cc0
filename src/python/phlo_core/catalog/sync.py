"""`phlo catalog sync`: the catalog of every location (`phlo_core.catalog.model`) written to
DataHub through DataHub's own library, which runs in an environment of its own (its framework's
pins exclude the locations'; ~/.cache/phlo/datahub-<version>-<pins>, made at the first sync).

Embedded default: DataHub Lite, a SQLite file under PHLO_HOME/catalog, which `phlo catalog
search|show|lineage` read. Production: DATAHUB_GMS_URL (and the secret DATAHUB_TOKEN) also
pushes every proposal to that DataHub server with DataHub's REST emitter. What the last sync
wrote is remembered (PHLO_HOME/catalog/synced.json, a digest per dataset, test and job): a sync
writes only what changed since (a run's new test results and job status, say), and a dataset,
test or job gone since is soft-deleted (Status removed), as DataHub does."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phlo_core.catalog.model import (
    LAKE_PLATFORM,
    LAYERS,
    Catalog,
    Job,
    build_catalog,
    dataset_urn,
    published_database,
    tested_node,
)
from phlo_core.lakehouse.locks import write_atomically
from phlo_core.needs import CATALOG_LITE
from phlo_core.redact import redact
from phlo_core.runs.asset_index import AssetIndex
from phlo_core.settings import PhloSettings
from phlo_core.tool_env import Progress, ToolEnvironment, ToolEnvironmentError, quiet

if TYPE_CHECKING:
    from dagster import DagsterInstance

VERSION = "1.7.0.17"
ENVIRONMENT = ToolEnvironment(
    "datahub", f"DataHub {VERSION}", VERSION, (f"acryl-datahub[datahub-lite]=={VERSION}",)
)
DRIVER = Path(__file__).with_name("datahub_driver.py")


class CatalogError(RuntimeError):
    """The catalog could not be synced (one line, secrets redacted)."""


@dataclass(frozen=True)
class SyncResult:
    datasets: int
    edges: int
    assertions: int
    jobs: int
    changed: int  # datasets, tests and jobs written (the others were as the last sync left them)
    removed: int
    lite: str
    gms: str | None
    seconds: float


def catalog_dir(settings: PhloSettings) -> Path:
    return settings.home / CATALOG_LITE[0]


def lite_file(settings: PhloSettings) -> Path:
    return settings.home.joinpath(*CATALOG_LITE)


def _manifests(settings: PhloSettings, locations: Mapping[str, set[str]]) -> dict[str, Any]:
    """Location -> its dbt project's manifest (the project whose models it materializes)."""
    from phlo_core.dbt.docs import dbt_projects
    from phlo_core.dbt.project import project_manifest

    found = {}
    for project in dbt_projects():
        manifest = json.loads(project_manifest(project, settings).read_text())
        models = {n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model"}
        owner = next((loc for loc, names in locations.items() if models & names), None)
        if owner is not None:
            found[owner] = manifest
    return found


def _column_types(settings: PhloSettings) -> dict[str, dict[str, str]]:
    """relation -> {column: type} of every lakehouse table (none while there is no lakehouse)."""
    from phlo_core.lakehouse.connect import LakehouseError, lakehouse

    try:
        with lakehouse(settings, read_only=True) as con:
            rows = con.execute(
                "select schema_name, table_name, column_name, data_type from duckdb_columns() "
                "where database_name = 'lake' order by schema_name, table_name, column_index"
            ).fetchall()
    except LakehouseError:
        return {}
    types: dict[str, dict[str, str]] = {}
    for schema, table, column, data_type in rows:
        types.setdefault(f"lake.{schema}.{table}".lower(), {})[column.lower()] = data_type
    return types


def _check_results(
    instance: DagsterInstance, manifests: Mapping[str, Any]
) -> dict[tuple[str, str], tuple[str, str, int]]:
    """(model, test) -> (SUCCESS | FAILURE, run id, epoch ms) of each test's latest result, from
    its Dagster asset check."""
    from dagster import AssetCheckKey, AssetKey
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus as Status,
    )

    keys = []
    for manifest in manifests.values():
        nodes = manifest["nodes"]
        for test in nodes.values():
            if test["resource_type"] != "test":
                continue
            attached = tested_node(test, nodes)
            if attached and nodes[attached]["resource_type"] == "model":
                keys.append(AssetCheckKey(AssetKey(nodes[attached]["name"]), test["name"]))
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    results = {}
    for key, record in latest.items():
        if record.status == Status.PLANNED:
            continue
        result = "SUCCESS" if record.status == Status.SUCCEEDED else "FAILURE"
        at = int(record.create_timestamp * 1000)
        results[(key.asset_key.to_user_string(), key.name)] = (result, record.run_id, at)
    return results


def _jobs(instance: DagsterInstance, catalog: Catalog, index: AssetIndex) -> list[Job]:
    """Each location's Dagster jobs (from the asset index) with the datasets the location writes
    and reads, and their latest run (from the instance)."""
    from dagster import RunsFilter

    by_location: dict[str, set[str]] = {}
    for d in catalog.datasets:
        if d.layer != "source" and d.location:
            by_location.setdefault(d.location, set()).add(d.urn)
    for location, assets in index.locations.items():
        for table in filter(None, assets.values()):
            by_location.setdefault(location, set()).add(dataset_urn(LAKE_PLATFORM, table.lower()))
    writes = {urn: loc for loc, urns in by_location.items() for urn in urns}
    jobs = []
    for location, location_jobs in index.jobs.items():
        outputs = sorted(by_location.get(location, set()))
        inputs = sorted(
            {
                up
                for d in catalog.datasets
                if d.urn in by_location.get(location, set())
                for up in d.upstreams
                if writes.get(up, location) != location
            }
        )
        flow = f"urn:li:dataFlow:(dagster,{location},PROD)"
        for name, description in sorted(location_jobs.items()):
            records = instance.get_run_records(RunsFilter(job_name=name), limit=1)
            last = records[0] if records else None
            end = last.end_time if last and last.end_time else 0
            jobs.append(
                Job(
                    urn=f"urn:li:dataJob:({flow},{name})",
                    flow_urn=flow,
                    location=location,
                    name=name,
                    description=description,
                    outputs=outputs,
                    inputs=inputs,
                    last_status=last.dagster_run.status.value if last else "",
                    last_run_id=last.dagster_run.run_id if last else "",
                    last_run_end_ms=int(end * 1000),
                )
            )
    return jobs


def collect(settings: PhloSettings, instance: DagsterInstance | None = None) -> Catalog:
    """The catalog as phlo knows it now (`instance`: the Dagster instance to read, e.g. a
    run's own; default: the settings' instance, opened and disposed here)."""
    from phlo_core.runs.asset_index import current_index
    from phlo_core.runs.instance import instance_for

    index = current_index(settings)
    manifests = _manifests(settings, {k: set(v) for k, v in index.locations.items()})
    opened = instance is None
    instance = instance or instance_for(settings)
    try:
        catalog = build_catalog(
            manifests,
            types=_column_types(settings),
            published_database=published_database(settings),
            check_results=_check_results(instance, manifests),
        )
        catalog.jobs = _jobs(instance, catalog, index)
    finally:
        if opened:
            instance.dispose()
    return catalog


def _synced_file(settings: PhloSettings) -> Path:
    return catalog_dir(settings) / "synced.json"


HEADER = "phlo:platforms-and-layers"  # the platforms and domains, written when they change


def _domains(catalog: Catalog) -> dict[str, str | None]:
    """The layers the datasets are in, with their descriptions (DataHub domains)."""
    return {layer: LAYERS.get(layer) for layer in sorted({d.layer for d in catalog.datasets})}


def _digests(catalog: Catalog) -> dict[str, str]:
    """urn -> a digest of what phlo writes for it (and one for the platforms and layers)."""

    def digest(value: object) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:20]

    found = {HEADER: digest([catalog.platforms, _domains(catalog)])}
    for entity in (*catalog.datasets, *catalog.assertions, *catalog.jobs):
        found[entity.urn] = digest(asdict(entity))
    return found


def _target(settings: PhloSettings) -> str:
    """Where a sync writes: Lite alone, or Lite and one GMS (a digest: never the URL)."""
    gms = settings.datahub_gms_url or ""
    return hashlib.sha256(gms.encode()).hexdigest()[:20] if gms else "lite"


def _last_sync(settings: PhloSettings) -> dict[str, str]:
    """urn -> digest of what the last sync wrote to the same target (empty: write it all)."""
    synced = _synced_file(settings)
    if not synced.exists() or not lite_file(settings).exists():
        return {}
    record = json.loads(synced.read_text())
    if isinstance(record, list):  # a record from before digests: every urn, nothing current
        return dict.fromkeys(record, "")
    if record.get("target") != _target(settings):
        return dict.fromkeys(record.get("written", {}), "")
    return record.get("written", {})


def sync(
    settings: PhloSettings,
    progress: Progress = quiet,
    *,
    full: bool = False,
    instance: DagsterInstance | None = None,
) -> SyncResult:
    """Write the catalog to DataHub Lite (and to DATAHUB_GMS_URL when set): what changed since
    the last sync to the same place (`full`: everything); what is gone, soft-deleted. Nothing
    changed: DataHub's environment is not even started."""
    started = time.monotonic()
    catalog = collect(settings, instance)
    now = _digests(catalog)
    before = _last_sync(settings)
    if full:
        before = dict.fromkeys(before, "")
    removed = sorted(urn for urn in before.keys() - now.keys() if urn != HEADER)
    changed = {urn for urn, digest in now.items() if before.get(urn) != digest}
    catalog_dir(settings).mkdir(mode=0o700, exist_ok=True)
    if changed or removed:
        _write(settings, catalog, changed, removed, progress)
    record = {"target": _target(settings), "written": now}
    write_atomically(_synced_file(settings), json.dumps(record, sort_keys=True), mode=0o600)
    gms = settings.datahub_gms_url
    return SyncResult(
        datasets=len(catalog.datasets),
        edges=len(catalog.edges()),
        assertions=len(catalog.assertions),
        jobs=len(catalog.jobs),
        changed=len(changed - {HEADER}),
        removed=len(removed),
        lite=str(lite_file(settings)),
        gms=redact(gms) if gms else None,
        seconds=round(time.monotonic() - started, 2),
    )


def _write(
    settings: PhloSettings,
    catalog: Catalog,
    changed: set[str],
    removed: list[str],
    progress: Progress,
) -> None:
    """The changed entities and the soft deletions, through DataHub's library in its own
    environment (made at the first sync)."""
    try:
        python = ENVIRONMENT.ensure(progress) / "bin" / "python"
    except ToolEnvironmentError as exc:
        raise CatalogError(str(exc)) from None
    header = HEADER in changed
    document = {
        "datasets": [asdict(d) for d in catalog.datasets if d.urn in changed],
        "assertions": [asdict(a) for a in catalog.assertions if a.urn in changed],
        "jobs": [asdict(j) for j in catalog.jobs if j.urn in changed],
        "platforms": catalog.platforms if header else {},
        "domains": _domains(catalog) if header else {},
    }
    folder = catalog_dir(settings)
    stamp = f"{os.getpid()}-{dt.datetime.now(dt.UTC):%H%M%S%f}"
    catalog_json = folder / f".catalog-{stamp}.json"
    removed_json = folder / f".removed-{stamp}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAHUB_", "VIRTUAL_ENV"))}
    env["DATAHUB_TELEMETRY_ENABLED"] = "false"
    env["DATAHUB_SUPPRESS_LOGGING_MANAGER"] = "1"
    gms = settings.datahub_gms_url
    if gms:
        env["DATAHUB_GMS_URL"] = gms
        if settings.datahub_token is not None:
            env["DATAHUB_TOKEN"] = settings.datahub_token.get_secret_value()
    try:
        catalog_json.write_text(json.dumps(document))
        removed_json.write_text(json.dumps(removed))
        done = subprocess.run(
            [str(python), str(DRIVER)]
            + [str(catalog_json), str(lite_file(settings)), str(removed_json)],
            capture_output=True,
            text=True,
            env=env,
            cwd=folder,
            timeout=600,
            check=False,
        )
    finally:
        catalog_json.unlink(missing_ok=True)
        removed_json.unlink(missing_ok=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        where = f"DataHub at {redact(gms)}" if gms else "DataHub Lite"
        raise CatalogError(f"writing to {where} failed: {redact(lines[-1] if lines else '?')}")
