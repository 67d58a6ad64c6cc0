"""dbt as Dagster assets: the profile derived from settings, the manifest, the partition window.

Every location's dbt project shares one profile (`phlo`) written under PHLO_HOME from the same
settings that open the lakehouse, so dbt and Python see the same catalog. A run passes its
partition window as vars (`start_date` inclusive, `end_date` exclusive): one dbt invocation
covers one day or a whole range.

dbt runs in-process with a manifest parsed once per process. A `dbt build` subprocess re-parses
the whole project on every run (new vars defeat partial parsing): about 11 s a run on two cores,
against 2-3 s in-process. Models become materializations and tests become asset check results
here, from dbt's own run results.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Failure,
    MaterializeResult,
)
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, dbt_assets

from phlo_core.lakehouse import CATALOG, ensure_extensions, query
from phlo_core.locks import file_lock, lakehouse_writer, write_atomically
from phlo_core.orphans import claim_run
from phlo_core.partitions import SINGLE_RUN, daily_partitions, window_days
from phlo_core.settings import PhloSettings

if TYPE_CHECKING:
    from dbt.cli.main import dbtRunnerResult
    from dbt.contracts.graph.manifest import Manifest

PROFILE = "phlo"
SHARED_PACKAGE = Path(__file__).resolve().parents[2] / "dbt" / "packages" / "phlo_shared"


class DbtError(RuntimeError):
    """dbt could not parse or build a project; the message carries dbt's own reason."""


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


def target_path(project_dir: Path, settings: PhloSettings) -> Path:
    return settings.dbt_dir / "target" / project_dir.name


def _newest_source_mtime(*folders: Path) -> float:
    newest = 0.0
    for folder in folders:
        for path in folder.rglob("*"):
            if path.suffix in (".sql", ".yml", ".yaml") and "dbt_packages" not in path.parts:
                newest = max(newest, path.stat().st_mtime)
    return newest


@contextlib.contextmanager
def _dbt_interrupts() -> Iterator[threading.Event]:
    """While dbt runs, Ctrl-C (SIGINT, or SIGTERM) raises KeyboardInterrupt: the one exception
    dbt handles, by cancelling its DuckDB queries and joining its worker threads. Dagster's own
    handler raises DagsterExecutionInterruptedError, which dbt does not handle: its worker
    thread stays inside DuckDB and C++ aborts the process when Python exits (exit 134).
    Further signals are ignored while dbt cleans up. The event records the interrupt, since
    dbt may swallow it (while parsing) or fail while cancelling."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        interrupted.set()
        raise KeyboardInterrupt

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.getsignal(signum) for signum in signals]
    for signum in signals:
        signal.signal(signum, interrupt)
    try:
        yield interrupted
    finally:
        for signum, handler in zip(signals, previous, strict=True):
            if handler is not None:
                signal.signal(signum, handler)


_dbt_lock = threading.Lock()
_parsed: dict[tuple[Path, Path], "Manifest"] = {}


def invoke_dbt(args: list[str], project_dir: Path, settings: PhloSettings, **runner: Any) -> Any:
    """Run one dbt command in this process; raise DbtError with dbt's reason if it fails."""
    from dbt.cli.main import dbtRunner

    log_dir = target_path(project_dir, settings) / "logs"
    full = [
        "--quiet",
        "--no-use-colors",
        "--no-send-anonymous-usage-stats",
        "--log-path",
        str(log_dir),
        *args,
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(settings.dbt_dir),
    ]
    with _dbt_lock, _dbt_interrupts() as interrupted:
        result: dbtRunnerResult = dbtRunner(**runner).invoke(full)
    # dbtRunner returns even KeyboardInterrupt as a result; an interrupt must reach Dagster.
    if interrupted.is_set() or isinstance(result.exception, KeyboardInterrupt):
        raise KeyboardInterrupt from result.exception
    if result.exception is not None:
        reason = _first_line(str(result.exception)) if str(result.exception).strip() else None
        raise DbtError(
            f"dbt {args[0]} failed for {project_dir.name}: "
            f"{reason or type(result.exception).__name__}"
        ) from result.exception
    return result


def _link_shared_package(project_dir: Path) -> None:
    """Install the local `phlo_shared` package as `dbt deps` does for a local package (a
    symlink in dbt_packages/), but atomically, so that concurrent first runs cannot collide."""
    link = project_dir / "dbt_packages" / SHARED_PACKAGE.name
    if link.exists():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.{os.getpid()}")
    with suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(os.path.relpath(SHARED_PACKAGE, link.parent), target_is_directory=True)
    os.replace(temporary, link)


def _manifest_is_current(manifest: Path, project_dir: Path) -> bool:
    """The manifest exists, is whole JSON (a kill while writing leaves neither behind, but
    older versions could) and is newer than every model, macro and YAML file."""
    try:
        if manifest.stat().st_mtime < _newest_source_mtime(project_dir, SHARED_PACKAGE):
            return False
        json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return True


def prepare_project(project_dir: Path, settings: PhloSettings) -> Path:
    """Write the profile, install the shared package, and parse when sources changed.

    Returns the manifest path. Parsing only happens when a model, macro or YAML file is newer
    than the manifest. Safe to run from several processes at once (a lock per home), and a
    kill midway leaves the previous manifest whole: dbt parses into a private folder and the
    manifest is then moved into place in one rename.
    """
    target = target_path(project_dir, settings)
    manifest = target / "manifest.json"
    with file_lock(settings.dbt_dir / ".prepare.lock"):
        write_profile(settings)
        ensure_extensions(settings)  # dbt's connection autoloads them from PHLO_HOME
        _link_shared_package(project_dir)
        if not _manifest_is_current(manifest, project_dir):
            scratch = target / f".parse-{os.getpid()}"
            try:
                parsed = invoke_dbt(["parse", "--target-path", str(scratch)], project_dir, settings)
                os.replace(scratch / "manifest.json", manifest)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            _parsed[(project_dir, settings.home)] = parsed.result
    return manifest


def parsed_manifest(project_dir: Path, settings: PhloSettings) -> "Manifest":
    """The project's parsed manifest, once per process (partial parsing makes it quick)."""
    key = (project_dir, settings.home)
    if key not in _parsed:
        directory = target_path(project_dir, settings)
        parsed = invoke_dbt(
            ["parse", "--no-write-json", "--target-path", str(directory)], project_dir, settings
        )
        _parsed[key] = parsed.result
    return _parsed[key]


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


_WRAPPER_LINE = re.compile(r"^(Runtime|Database|Compilation|Parsing) Error in ", re.IGNORECASE)


def _first_line(text: str | None) -> str:
    """The line that says what went wrong: dbt puts 'Runtime Error in model x (path)' first and
    the cause ('database is locked', a failing test's count) on the next line."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    causes = [line for line in lines if not _WRAPPER_LINE.match(line)]
    return (causes or lines or ["failed"])[0]


def _failing_rows(compiled_sql: str | None, settings: PhloSettings, limit: int = 3) -> str:
    """A few of the rows a failed test returned, `col=value` joined, so that the one-line
    failure names the day at fault; empty if they cannot be read."""
    if not compiled_sql:
        return ""
    try:
        found = query(f"select * from ({compiled_sql}) limit {limit}", settings)
    except Exception:  # a hint only: the failure itself is reported either way
        return ""
    shown = [
        ", ".join(f"{column}={value}" for column, value in zip(found.columns, row, strict=True))
        for row in found.rows
    ]
    return f" (e.g. {'; '.join(shown)})" if shown else ""


def _build_events(
    result: "dbtRunnerResult",
    checks: Mapping[str, AssetCheckKey],
    models: Mapping[str, AssetKey],
    settings: PhloSettings,
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
                failures.append(f"model {node.name}: {_first_line(node_result.message)}")
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
                    _failing_rows(getattr(node, "compiled_code", None), settings)
                    if status == "fail"
                    else ""
                )
                failures.append(f"test {node.name}: {_first_line(node_result.message)}{rows}")
    if not result.success:
        detail = "; ".join(failures) or _first_line(str(result.exception))
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
        stale = run is None and time.time() - folder.stat().st_mtime > 86_400
        if stale or (run is not None and run.is_finished):
            shutil.rmtree(folder, ignore_errors=True)


def build_dbt_assets(
    project_dir: Path,
    settings: PhloSettings,
    *,
    group_name: str,
    extra_vars: Mapping[str, Any] | None = None,
) -> AssetsDefinition:
    """All models of a dbt project as daily-partitioned assets; its tests as asset checks."""
    manifest_path = prepare_project(project_dir, settings)
    translator = PhloDbtTranslator(group_name)
    manifest_json = json.loads(manifest_path.read_text())
    model_keys = {
        node["name"]: translator.get_asset_key(node)
        for node in manifest_json["nodes"].values()
        if node["resource_type"] == "model"
    }
    base_vars = {"timezone": settings.phlo_timezone, **(extra_vars or {})}
    runs_dir = target_path(project_dir, settings) / "runs"

    @dbt_assets(
        manifest=manifest_json,
        name=f"{group_name}_dbt_models",
        partitions_def=daily_partitions(settings),
        backfill_policy=SINGLE_RUN,
        dagster_dbt_translator=translator,
    )
    def _models(context: AssetExecutionContext) -> Iterator[Any]:
        window = context.partition_time_window
        days = window_days(window.start, window.end)
        dbt_vars = {
            **base_vars,
            "start_date": days.start.isoformat(),
            "end_date": days.end.isoformat(),
        }
        selected = sorted(
            name for name, key in model_keys.items() if key in context.selected_asset_keys
        )
        checks = {key.name: key for key in context.selected_asset_check_keys}
        claim_run(context.instance, context.run.run_id, context.run.tags)
        manifest = parsed_manifest(project_dir, settings)
        _remove_finished_run_folders(runs_dir, context)
        run_target = runs_dir / context.run.run_id
        args = ["build", "--target-path", str(run_target), "--vars", json.dumps(dbt_vars)]
        if len(selected) < len(model_keys):
            args += ["--select", *selected]
        context.log.info(f"dbt build of {len(selected)} model(s) for {days.label()}")
        try:
            run_target.mkdir(parents=True, exist_ok=True)
            # One writer at a time per lakehouse: dbt does not retry a commit that meets
            # another process's (`database is locked` on SQLite), nor share `__dbt_tmp` tables.
            with lakehouse_writer(settings):
                result = invoke_dbt(args, project_dir, settings, manifest=manifest)
            models = {n: model_keys[n] for n in selected}
            yield from _build_events(result, checks, models, settings)
        finally:
            shutil.rmtree(run_target, ignore_errors=True)

    return _models
