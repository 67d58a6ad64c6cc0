"""The Dagster instance phlo records its runs in (DAGSTER_HOME)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from phlo_core.locks import file_lock, write_atomically
from phlo_core.orphans import fail_orphaned_runs
from phlo_core.settings import PhloSettings
from phlo_core.workspace import REPO_ROOT

if TYPE_CHECKING:
    from dagster import DagsterInstance


TEMPLATE = REPO_ROOT / "infra" / "dagster" / "dagster.yaml"


def instance_for(settings: PhloSettings) -> DagsterInstance:
    """The Dagster instance in DAGSTER_HOME, created on first use. Creation is serialized:
    two processes creating SQLite storage at once stamp its schema twice, which breaks every
    later run on that instance. Runs whose process is gone are marked failed here."""
    from dagster import DagsterInstance

    home = settings.resolved_dagster_home
    with file_lock(home / ".phlo-instance.lock"):
        config = home / "dagster.yaml"
        wanted = TEMPLATE.read_text()
        current = config.read_text() if config.exists() else None
        ours = current is not None and current.startswith(wanted.splitlines()[0])
        if current is None or (ours and current != wanted):
            # Missing, or written by an older phlo: the instance follows this version's file.
            write_atomically(config, wanted)
        instance = DagsterInstance.from_config(str(home))
        instance.get_run_records(limit=1)  # opens (and creates) the storage under the lock
    fail_orphaned_runs(instance)
    return instance
