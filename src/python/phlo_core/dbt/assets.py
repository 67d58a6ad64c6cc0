"""dbt as Dagster assets: models become daily-partitioned assets, tests asset checks.

A run passes its partition window as vars (`start_date` inclusive, `end_date` exclusive): one
dbt invocation covers one day or a whole range. Models become materializations and tests
become asset check results here, from dbt's own run results.
"""

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Failure,
    MaterializeResult,
)
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtProject, dbt_assets

from phlo_core.dbt.project import project_manifest
from phlo_core.dbt.runner import DbtError, cause_line, invoke_dbt
from phlo_core.lakehouse.connect import retrying
from phlo_core.lakehouse.publish import SCHEMA as MARTS_SCHEMA
from phlo_core.lakehouse.publish import build_publish_asset
from phlo_core.log import get_logger
from phlo_core.partitions import backfill_policy, daily_partitions, window_days
from phlo_core.resources import DBT, LAKEHOUSE, DbtRunner, Lakehouse, resource
from phlo_core.runs.orphans import claim_run
from phlo_core.settings import PhloSettings

if TYPE_CHECKING:
    from dbt.cli.main import dbtRunnerResult


class PhloDbtTranslator(DagsterDbtTranslator):
    """Models are assets named after the model; sources map to their ingestion asset by meta."""

    def __init__(self, group_name: str) -> None:
        super().__init__(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))
        self._group_name = group_name

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        if dbt_resource_props["resource_type"] == "model":
            return AssetKey(dbt_resource_props["name"])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return self._group_name

    def get_asset_check_spec(
        self,
        asset_spec: AssetSpec,
        manifest: Mapping[str, Any],
        unique_id: str,
        project: DbtProject | None,
    ) -> AssetCheckSpec | None:
        """dagster-dbt reads a check's description from the test's `meta` only, so every check
        showed "No description provided": the test's own description (schema.yml), or for a
        generic test what it tests ("unique: reading_date")."""
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None or spec.description:
            return spec
        test = manifest.get("nodes", {}).get(unique_id, {})
        generic = test.get("test_metadata") or {}
        column = test.get("column_name")
        description = test.get("description") or (
            f"{generic.get('name', 'test')}{f': {column}' if column else ''}" if generic else ""
        )
        return spec._replace(description=description) if description else spec


def _failing_rows(compiled_sql: str | None, lakehouse: Lakehouse, limit: int = 3) -> str:
    """A few of the rows a failed test returned, `col=value` joined, so that the one-line
    failure names the day at fault; empty if they cannot be read."""
    if not compiled_sql:
        return ""
    try:
        found = lakehouse.query(f"select * from ({compiled_sql}) limit {limit}")
    except Exception:  # a hint only: the failure itself is reported either way
        return ""
    shown = [
        ", ".join(f"{column}={value}" for column, value in zip(found.columns, row, strict=True))
        for row in found.rows
    ]
    return f" (e.g. {'; '.join(shown)})" if shown else ""


# How DuckLake and SQLite say that another writer's commit came first (DuckLake retries a
# commit a few times itself before it gives up with the last of these). `already exists`: on
# a new lakehouse two processes both find a model's table missing and both create it; the
# second build, run again, finds the table and appends.
_CONFLICTS = (
    "database is locked",
    "transaction conflict",
    "failed to commit ducklake transaction",
    "exceeded the maximum retry count",
    "already exists",
)


def is_conflict(message: object) -> bool:
    text = str(message or "").lower()
    return any(marker in text for marker in _CONFLICTS)


def conflicted(result: "dbtRunnerResult") -> list[str]:
    """The nodes dbt could not commit because another writer's commit came first: errors worth
    building again (any other error is dbt's answer)."""
    return [
        node_result.node.name
        for node_result in getattr(result.result, "results", None) or []
        if str(node_result.status) == "error" and is_conflict(node_result.message)
    ]


class _ConflictError(Exception):
    """A build some of whose nodes met another writer's commit (`result` is dbt's)."""

    def __init__(self, result: "dbtRunnerResult") -> None:
        super().__init__("dbt build met another writer's commit")
        self.result = result


def build_retrying_conflicts(
    args: list[str], project_dir: Path, settings: PhloSettings, manifest: Any, attempts: int = 16
) -> "dbtRunnerResult":
    """`dbt build` whose commits may meet other writers' (other processes building other days,
    ingestion): when a node failed on a commit conflict, the whole build runs again after a
    random pause (`lakehouse.retrying`; each model replaces its window, or its whole table, in
    one transaction, so a build is safe to repeat). Other failures are dbt's answer, returned
    as they are; so is the last attempt's result. The pauses grow to several seconds, a
    build's length: writers rebuilding the same tables at once (three processes on the same
    days) fall out of step instead of meeting again at every attempt."""

    def build() -> "dbtRunnerResult":
        result = invoke_dbt(args, project_dir, settings, manifest=manifest)
        nodes = conflicted(result)
        if nodes:
            log.warning(
                "dbt build met another writer's commit",
                project=project_dir.name,
                nodes=",".join(nodes),
            )
            raise _ConflictError(result)
        return result

    def again(exc: BaseException) -> bool:  # the connection itself (attaching) may meet one too
        return isinstance(exc, _ConflictError) or (isinstance(exc, DbtError) and is_conflict(exc))

    try:
        return retrying(build, attempts=attempts, retry_on=again, max_wait=5.0)
    except _ConflictError as exc:
        return exc.result


def _build_events(
    result: "dbtRunnerResult",
    checks: Mapping[str, AssetCheckKey],
    models: Mapping[str, AssetKey],
    lakehouse: Lakehouse,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Dagster events from dbt's run results: built models, evaluated tests; then fail on
    errors, naming every node that failed."""
    failures: list[str] = []
    for node_result in getattr(result.result, "results", None) or []:
        node = node_result.node
        status = str(node_result.status)
        if node.resource_type == "model":
            if status == "success" and node.name in models:
                yield MaterializeResult(
                    asset_key=models[node.name],
                    metadata={
                        "dbt_seconds": round(node_result.execution_time, 3),
                        "relation": f"{node.schema}.{node.alias}",
                    },
                )
            elif status == "error":
                failures.append(f"model {node.name}: {cause_line(node_result.message)}")
        elif node.resource_type == "test":
            if status == "skipped":
                continue
            key = checks.get(node.name)
            if key is not None:
                yield AssetCheckResult(
                    asset_key=key.asset_key,
                    check_name=key.name,
                    passed=status == "pass",
                    severity=AssetCheckSeverity.WARN
                    if status == "warn"
                    else AssetCheckSeverity.ERROR,
                    metadata={"failing_rows": node_result.failures or 0, "status": status},
                )
            if status in ("fail", "error"):
                rows = (
                    _failing_rows(getattr(node, "compiled_code", None), lakehouse)
                    if status == "fail"
                    else ""
                )
                failures.append(f"test {node.name}: {cause_line(node_result.message)}{rows}")
    if not result.success:
        detail = "; ".join(failures) or cause_line(str(result.exception))
        raise Failure(description=f"dbt build failed: {detail}")


def _remove_finished_run_folders(runs_dir: Path, context: AssetExecutionContext) -> None:
    """dbt's per-run folders of runs that are over: a killed run never removed its own. A
    folder of a run this instance does not know (another DAGSTER_HOME on the same PHLO_HOME)
    goes only once it is a day old."""
    if not runs_dir.is_dir():
        return
    for folder in runs_dir.iterdir():
        if folder.name == context.run.run_id:
            continue
        run = context.instance.get_run_by_id(folder.name)
        try:
            stale = run is None and time.time() - folder.stat().st_mtime > 86_400
        except OSError:  # removed meanwhile by another process
            continue
        if stale or (run is not None and run.is_finished):
            shutil.rmtree(folder, ignore_errors=True)


PARTITIONED = "config.materialized:incremental"
log = get_logger(__name__)
# The dbt vars of a location's own settings, for a run's settings (`--vars`).
RunVars = Callable[[PhloSettings], Mapping[str, Any]]


def _no_vars(settings: PhloSettings) -> Mapping[str, Any]:
    return {}


def build_dbt_assets(
    project_dir: Path,
    settings: PhloSettings,
    *,
    group_name: str,
    run_vars: RunVars | None = None,
) -> list[AssetsDefinition]:
    """The models of a dbt project as assets, their tests as asset checks: incremental models
    (written a window of days at a time) daily-partitioned; the others (tables rebuilt whole,
    such as marts) unpartitioned, so the UI shows what each run really writes. The marts
    (schema `marts`) are also published to PostgreSQL by `<group>_published_marts`.

    A run builds through its `dbt` resource on its `lakehouse` resource, with the vars
    `run_vars` gives for the run's settings (the location's own, such as an interval); the
    settings given here decide only the calendar and where the project's parse is kept."""
    manifest_path = project_manifest(project_dir, settings)
    manifest_json = json.loads(manifest_path.read_text())
    models = [n for n in manifest_json["nodes"].values() if n["resource_type"] == "model"]
    incremental = [n for n in models if n["config"].get("materialized") == "incremental"]
    built = []
    if incremental:
        built.append(
            _dbt_models(
                project_dir, settings, manifest_json, group_name, run_vars, partitioned=True
            )
        )
    if len(incremental) < len(models):
        built.append(
            _dbt_models(
                project_dir, settings, manifest_json, group_name, run_vars, partitioned=False
            )
        )
    marts = [AssetKey(n["name"]) for n in models if n["schema"] == MARTS_SCHEMA]
    if marts:
        built.append(build_publish_asset(group_name, marts))
    return built


def _dbt_models(
    project_dir: Path,
    settings: PhloSettings,
    manifest_json: Mapping[str, Any],
    group_name: str,
    run_vars: RunVars | None,
    *,
    partitioned: bool,
) -> AssetsDefinition:
    translator = PhloDbtTranslator(group_name)
    model_keys = {
        node["name"]: translator.get_asset_key(node)
        for node in manifest_json["nodes"].values()
        if node["resource_type"] == "model"
        and (node["config"].get("materialized") == "incremental") == partitioned
    }

    @dbt_assets(
        manifest=manifest_json,
        name=f"{group_name}_dbt_{'models' if partitioned else 'tables'}",
        select=PARTITIONED if partitioned else "fqn:*",
        exclude=None if partitioned else PARTITIONED,
        partitions_def=daily_partitions(settings) if partitioned else None,
        backfill_policy=backfill_policy(settings) if partitioned else None,
        dagster_dbt_translator=translator,
        required_resource_keys={LAKEHOUSE, DBT},
    )
    def _models(context: AssetExecutionContext) -> Iterator[Any]:
        lakehouse = resource(context, LAKEHOUSE, Lakehouse)
        dbt = resource(context, DBT, DbtRunner)
        run_settings = dbt.settings
        dbt_vars = {"timezone": run_settings.phlo_timezone, **(run_vars or _no_vars)(run_settings)}
        runs_dir = dbt.target_path(project_dir) / "runs"
        label = "all"
        if partitioned:
            window = context.partition_time_window
            days = window_days(window.start, window.end)
            dbt_vars |= {"start_date": days.start.isoformat(), "end_date": days.end.isoformat()}
            label = days.label()
        selected = sorted(
            name for name, key in model_keys.items() if key in context.selected_asset_keys
        )
        checks = {key.name: key for key in context.selected_asset_check_keys}
        claim_run(context.instance, context.run.run_id, context.run.tags)
        _remove_finished_run_folders(runs_dir, context)
        run_target = runs_dir / context.run.run_id / ("models" if partitioned else "tables")
        # No manifest.json/run_results.json: the results are read from dbt's return value and
        # the run's folder is removed after it; writing them cost ~0.3 s a build. dbt lists
        # the relations of the selected models' schemas only, not of every schema the project
        # has (a DuckLake catalog query each); it looks up any other relation it needs.
        args = [
            "build",
            "--no-write-json",
            "--cache-selected-only",
            "--target-path",
            str(run_target),
        ]
        args += ["--vars", json.dumps(dbt_vars)]
        if selected:
            # A test runs in the step that builds the last of the models it reads (`buildable`):
            # a mart's test that also reads a daily model runs with the mart, after both exist.
            args += ["--select", *selected, "--indirect-selection", "buildable"]
        elif checks:
            args += ["--select", *sorted(checks)]  # only checks asked for: their tests
        else:
            return
        log.info("dbt build", project=project_dir.name, models=len(selected), days=label)
        try:
            run_target.mkdir(parents=True, exist_ok=True)
            # Daily models: days at once from several processes (backfill workers); they
            # stage in per-connection temporary tables, and maintenance waits for them. Tables
            # rebuilt whole stage in `<model>__dbt_tmp` and `__dbt_backup` tables of the
            # lakehouse, names every process shares: one such build at a time.
            with lakehouse.lock(shared=partitioned):
                result = dbt.build(project_dir, args)
            models = {n: model_keys[n] for n in selected}
            yield from _build_events(result, checks, models, lakehouse)
        finally:
            shutil.rmtree(run_target, ignore_errors=True)
            with contextlib.suppress(OSError):
                run_target.parent.rmdir()  # unless the run's other dbt step still uses it

    return _models
