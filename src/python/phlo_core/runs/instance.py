"""The Dagster instance phlo records its runs in (DAGSTER_HOME).

Its `dagster.yaml` follows the settings: SQLite files under DAGSTER_HOME by default (the event
log through `phlo_core.runs.event_storage`, which keeps connections open), PostgreSQL
(runs, event log, schedules) when PHLO_DAGSTER_POSTGRES_URL is set. phlo writes the file and
rewrites it whenever the settings or phlo's template change, as long as it starts with the
template's first line; a file of your own is left alone.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from phlo_core.lakehouse.locks import file_lock, write_atomically
from phlo_core.redact import redact
from phlo_core.runs.orphans import fail_orphaned_runs
from phlo_core.settings import PhloSettings
from phlo_core.workspace import REPO_ROOT

if TYPE_CHECKING:
    from dagster import DagsterInstance


TEMPLATE = REPO_ROOT / "infra" / "dagster" / "dagster.yaml"
# What an older phlo's file began with (it said "embedded" above PostgreSQL storage too): ours.
_EARLIER_FIRST_LINE = "# Instance settings for the embedded default (SQLite storage under"


class InstanceError(RuntimeError):
    """Dagster's instance storage could not be opened; one line, no secret in it."""


def _reason(exc: BaseException) -> str:
    """The driver's own reason: the innermost cause's first line that says something."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def instance_config(settings: PhloSettings) -> str:
    """The dagster.yaml for these settings: the template, plus PostgreSQL storage if set."""
    text = TEMPLATE.read_text()
    url = settings.dagster_postgres_url
    if url is None:
        # Dagster's SQLite files in their usual places; the event log through a class that
        # keeps its connections open (`phlo_core.runs.event_storage`: runs 1.5x faster).
        runs = settings.resolved_dagster_home / "history" / "runs"
        return text + (
            "# The event log: Dagster's SQLite storage, keeping its connections open.\n"
            "event_log_storage:\n  module: phlo_core.runs.event_storage\n"
            "  class: PooledSqliteEventLogStorage\n"
            f"  config:\n    base_dir: {json.dumps(str(runs))}\n"
        )
    # The URL (with its password) is written here because `dagster dev`, its daemon and code
    # servers read this file without phlo's settings; the file is readable by its owner only.
    return text + (
        "# Runs, event log and schedules in PostgreSQL (PHLO_DAGSTER_POSTGRES_URL).\n"
        f"storage:\n  postgres:\n    postgres_url: {json.dumps(url)}\n"
    )


def sync_instance_config(settings: PhloSettings) -> None:
    """Write DAGSTER_HOME/dagster.yaml for these settings unless it is a file of the user's."""
    home = settings.resolved_dagster_home
    config = home / "dagster.yaml"
    wanted = instance_config(settings)
    current = config.read_text() if config.exists() else None
    ours = current is not None and current.startswith((wanted.splitlines()[0], _EARLIER_FIRST_LINE))
    if current is None or (ours and current != wanted):
        # Missing, written by an older phlo or for other settings: follow these.
        write_atomically(config, wanted, mode=0o600)  # may hold the storage's password


def check_dagster_postgres(settings: PhloSettings) -> None:
    """Connect once to Dagster's PostgreSQL, so that a wrong URL or a server that is down is
    one line naming it (Dagster itself retries for a while, then says "too many retries")."""
    if settings.phlo_dagster_postgres_url is not None:
        connect_dagster_postgres(settings).close()


def connect_dagster_postgres(settings: PhloSettings) -> Any:
    """A psycopg2 connection (autocommit) to Dagster's PostgreSQL; InstanceError naming the
    URL (redacted) when it cannot be made."""
    import psycopg2

    assert settings.phlo_dagster_postgres_url is not None
    url = settings.phlo_dagster_postgres_url.get_secret_value()
    try:
        connection = psycopg2.connect(url.replace("+psycopg2", "", 1), connect_timeout=5)
    except psycopg2.Error as exc:
        raise InstanceError(
            f"cannot connect to Dagster's PostgreSQL (PHLO_DAGSTER_POSTGRES_URL {redact(url)}): "
            f"{redact(_reason(exc))}"
        ) from None
    connection.autocommit = True
    return connection


def keep_connections_open(instance: DagsterInstance) -> None:
    """dagster-postgres opens a new connection for every statement unless told otherwise, and
    a run writes hundreds of events: on two cores that cost a run on PostgreSQL 1.7x the same
    run on SQLite. A pool (what Dagster's webserver uses) keeps a connection per thread open
    for the life of the process; statements run without a time limit, as in a run."""
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=10)


def instance_for(settings: PhloSettings) -> DagsterInstance:
    """The Dagster instance in DAGSTER_HOME, created on first use. Creation is serialized:
    two processes creating SQLite storage at once stamp its schema twice, which breaks every
    later run on that instance. Runs whose process is gone are marked failed here."""
    from dagster import DagsterInstance

    home = settings.resolved_dagster_home
    check_dagster_postgres(settings)
    with file_lock(home / ".phlo-instance.lock"):
        sync_instance_config(settings)
        try:
            instance = DagsterInstance.from_config(str(home))
            if settings.dagster_postgres_url is not None:
                keep_connections_open(instance)
            instance.get_run_records(limit=1)  # opens (and creates) the storage under the lock
        except Exception as exc:
            if settings.dagster_postgres_url is None:
                raise
            raise InstanceError(
                "cannot open Dagster's storage in PostgreSQL (PHLO_DAGSTER_POSTGRES_URL "
                f"{redact(settings.dagster_postgres_url)}): {redact(_reason(exc))}"
            ) from None
    fail_orphaned_runs(instance)
    return instance
