"""The Dagster instance phlo records its runs in (DAGSTER_HOME)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from phlo_core.locks import file_lock, write_atomically
from phlo_core.orphans import fail_orphaned_runs
from phlo_core.settings import PhloSettings
from phlo_core.workspace import REPO_ROOT

if TYPE_CHECKING:
    from dagster import DagsterInstance


def instance_for(settings: PhloSettings) -> DagsterInstance:
    """The Dagster instance in DAGSTER_HOME, created on first use. Creation is serialized:
    two processes creating SQLite storage at once stamp its schema twice, which breaks every
    later run on that instance. Runs whose process is gone are marked failed here."""
    from dagster import DagsterInstance

    home = settings.resolved_dagster_home
    with file_lock(home / ".phlo-instance.lock"):
        config = home / "dagster.yaml"
        if not config.exists():
            template = REPO_ROOT / "infra" / "dagster" / "dagster.yaml"
            write_atomically(config, template.read_text())
        instance = DagsterInstance.from_config(str(home))
        instance.get_run_records(limit=1)  # opens (and creates) the storage under the lock
    fail_orphaned_runs(instance)
    return instance
