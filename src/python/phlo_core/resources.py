"""Dagster resources configured from phlo's settings: what a run's assets receive instead of
closing over settings when definitions are built.

- `lakehouse` (`Lakehouse`): the tables' catalog and files, its writes, queries and locks;
- `dbt` (`DbtRunner`): dbt in this process (`dbtRunner`, which is what makes runs fast), with the
  profile and the parse of the same settings;
- each location's source client, a subclass of `SettingsResource` under a key of its own.

A resource serves the settings of the run it is used in, asked for when the run needs them (never
when the definitions load): a run `phlo` executes gets the command's settings (`run_settings`,
around the run: a run launched by `phlo materialize` with overrides, the demo's home or a test's
settings, uses them), a run Dagster launches itself (the UI, a schedule, the daemon) the settings
of that process's environment. So the definitions hold the same resources whatever the settings,
and one set of definitions serves every command.

They are plain Python objects handed to Dagster (its `ResourceParam` way), not
`ConfigurableResource`s: Dagster rebuilds a configurable resource from its config fields and
stores the values of those fields in the run's job snapshot, where secrets (the API secret, the
object store's key, the catalog's password) must never be; a plain object is passed as it is and
nothing of it is stored. (Handing a run other resource objects than its definitions' is refused
by Dagster as soon as the run selects assets: hence the run's settings, not other objects.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from phlo_core.settings import PhloSettings, get_settings

if TYPE_CHECKING:
    import duckdb
    from dbt.cli.main import dbtRunnerResult

    from phlo_core.lakehouse.connect import QueryResult
    from phlo_core.lakehouse.writes import PartitionWrite

LAKEHOUSE = "lakehouse"
DBT = "dbt"
R = TypeVar("R", bound="SettingsResource")
_RUN_SETTINGS: ContextVar[PhloSettings | None] = ContextVar("phlo_run_settings", default=None)


@contextlib.contextmanager
def run_settings(settings: PhloSettings) -> Iterator[None]:
    """Every resource used inside the block (a run executed in this thread) serves `settings`."""
    token = _RUN_SETTINGS.set(settings)
    try:
        yield
    finally:
        _RUN_SETTINGS.reset(token)


class SettingsResource:
    """A resource configured from phlo's settings: the given ones, else the running run's
    (`run_settings`), else the environment's, read when asked."""

    def __init__(self, settings: PhloSettings | None = None) -> None:
        self._settings = settings

    @property
    def settings(self) -> PhloSettings:
        if self._settings is not None:
            return self._settings
        return _RUN_SETTINGS.get() or get_settings()


class Lakehouse(SettingsResource):
    """The lakehouse of the settings: writes of whole days, read-only queries and the locks
    that keep writers and maintenance apart."""

    def replace_partitions(
        self,
        writes: Sequence[PartitionWrite],
        guard: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> None:
        from phlo_core.lakehouse.writes import replace_partitions

        replace_partitions(writes, self.settings, guard=guard)

    def query(self, sql: str) -> QueryResult:
        from phlo_core.lakehouse.connect import query

        return query(sql, self.settings)

    def lock(self, *, shared: bool) -> contextlib.AbstractContextManager[Any]:
        """Shared: daily builds, which may run side by side (maintenance waits for them);
        otherwise one writer at a time (tables rebuilt whole stage under shared names)."""
        from phlo_core.lakehouse.locks import lakehouse_building, lakehouse_writer

        return lakehouse_building(self.settings) if shared else lakehouse_writer(self.settings)


class DbtRunner(SettingsResource):
    """dbt run in this process on the settings' lakehouse: builds that meet another writer's
    commit are built again (`dbt_assets.build_retrying_conflicts`)."""

    def target_path(self, project_dir: Path) -> Path:
        from phlo_core.dbt.runner import target_path

        return target_path(project_dir, self.settings)

    def build(self, project_dir: Path, args: list[str]) -> dbtRunnerResult:
        """`dbt build` with `args`, the project first made ready for the run's settings (its
        profile, the extensions, a current parse)."""
        from phlo_core.dbt.assets import build_retrying_conflicts
        from phlo_core.dbt.project import prepare_project
        from phlo_core.dbt.runner import parsed_manifest

        prepare_project(project_dir, self.settings)
        manifest = parsed_manifest(project_dir, self.settings)
        return build_retrying_conflicts(args, project_dir, self.settings, manifest)


_SHARED: dict[str, SettingsResource] = {LAKEHOUSE: Lakehouse(), DBT: DbtRunner()}


def default_resources() -> dict[str, SettingsResource]:
    """The resources every location's definitions hold: the same objects in every location
    (they keep no settings of their own), so that definitions merge as Dagster merges them."""
    return dict(_SHARED)


def resource(context: Any, key: str, kind: type[R]) -> R:
    """The run's resource `key` (an asset names it in `required_resource_keys`), checked to be
    the kind the asset expects: a location whose definitions hold another is told so."""
    value = getattr(context.resources, key)
    if not isinstance(value, kind):
        raise TypeError(f"resource {key!r} is a {type(value).__name__}, not a {kind.__name__}")
    return value
