"""dbt as Dagster assets: the profile derived from settings, the manifest, the partition window.

Every location's dbt project shares one profile (`phlo`) written under PHLO_HOME from the same
settings that open the lakehouse, so dbt and Python see the same catalog. A run passes its
partition window as vars (`start_date` inclusive, `end_date` exclusive): one dbt invocation
covers one day or a whole range.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from dagster import AssetExecutionContext, AssetKey, AssetsDefinition
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    dbt_assets,
)

from phlo_core.lakehouse import CATALOG, connect
from phlo_core.partitions import SINGLE_RUN, daily_partitions, window_days
from phlo_core.settings import PhloSettings

PROFILE = "phlo"
PARTIAL_PARSE = "partial_parse.msgpack"
SHARED_PACKAGE = Path(__file__).resolve().parents[2] / "dbt" / "packages" / "phlo_shared"


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
                            "options": {"data_path": settings.lake_data_path},
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
        path.write_text(text)
    return profiles_dir


def target_path(project_dir: Path, settings: PhloSettings) -> Path:
    return settings.dbt_dir / "target" / project_dir.name


def _newest_source_mtime(*folders: Path) -> float:
    newest = 0.0
    for folder in folders:
        for path in folder.rglob("*"):
            if path.suffix in (".sql", ".yml", ".yaml", ".md") and "dbt_packages" not in path.parts:
                newest = max(newest, path.stat().st_mtime)
    return newest


def dbt_executable() -> str:
    """The dbt installed beside this Python (a venv's or PEX's), else the one on PATH."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else "dbt"


def _dbt(args: list[str], project_dir: Path, settings: PhloSettings) -> None:
    command = [dbt_executable(), *args]
    command += ["--project-dir", str(project_dir), "--profiles-dir", str(settings.dbt_dir)]
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"dbt {args[0]} failed for {project_dir.name}:\n{tail}")


def prepare_project(project_dir: Path, settings: PhloSettings) -> Path:
    """Write the profile, install the shared package, and parse when sources changed.

    Returns the manifest path. Parsing costs a few seconds, so it only happens when a model,
    macro or YAML file is newer than the manifest.
    """
    write_profile(settings)
    connect(settings).close()  # installs the DuckDB extensions dbt's connection autoloads
    manifest = target_path(project_dir, settings) / "manifest.json"
    if not (project_dir / "dbt_packages" / "phlo_shared").exists():
        _dbt(["deps"], project_dir, settings)
    stale = not manifest.exists() or manifest.stat().st_mtime < _newest_source_mtime(
        project_dir, SHARED_PACKAGE
    )
    if stale:
        _dbt(["parse", "--target-path", str(manifest.parent)], project_dir, settings)
    return manifest


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


def build_dbt_assets(
    project_dir: Path,
    settings: PhloSettings,
    *,
    group_name: str,
    extra_vars: Mapping[str, Any] | None = None,
) -> tuple[AssetsDefinition, DbtCliResource]:
    """All models of a dbt project as daily-partitioned assets; its tests as asset checks."""
    manifest = prepare_project(project_dir, settings)
    base_vars = {"timezone": settings.phlo_timezone, **(extra_vars or {})}
    runs_dir = target_path(project_dir, settings) / "runs"

    @dbt_assets(
        manifest=manifest,
        name=f"{group_name}_dbt_models",
        partitions_def=daily_partitions(settings),
        backfill_policy=SINGLE_RUN,
        dagster_dbt_translator=PhloDbtTranslator(group_name),
    )
    def _models(context: AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        window = context.partition_time_window
        days = window_days(window.start, window.end)
        dbt_vars = {
            **base_vars,
            "start_date": days.start.isoformat(),
            "end_date": days.end.isoformat(),
        }
        context.log.info(f"dbt build for {days.label()} ({len(days)} day(s))")
        run_target = runs_dir / context.run_id
        run_target.mkdir(parents=True, exist_ok=True)
        # A fresh target folder per run lets runs overlap; seeding it with the parse state saves
        # dbt a full re-parse (about 3 s) on every run.
        if (manifest.parent / PARTIAL_PARSE).exists():
            shutil.copyfile(manifest.parent / PARTIAL_PARSE, run_target / PARTIAL_PARSE)
        yield from dbt.cli(
            ["build", "--vars", json.dumps(dbt_vars)], context=context, target_path=run_target
        ).stream()

    resource = DbtCliResource(
        project_dir=str(project_dir),
        profiles_dir=str(settings.dbt_dir),
        profile=PROFILE,
        dbt_executable=dbt_executable(),
    )
    return _models, resource
