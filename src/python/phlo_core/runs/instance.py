"""The Dagster instance phlo records its runs in (DAGSTER_HOME).

Its `dagster.yaml` follows the settings: SQLite files under DAGSTER_HOME by default (the event
log through `phlo_core.runs.event_storage`, which keeps connections open), PostgreSQL
(runs, event log, schedules) when PHLO_DAGSTER_POSTGRES_URL is set. phlo writes the file and
rewrites it whenever the settings or phlo's template change, as long as it starts with the
template's first line; a file of your own is left alone.

With PHLO_RUN_LAUNCHER=docker the daemon and the UI launch each run in a container of its own
(Dagster's DockerRunLauncher, host network). Dagster hands a run its instance on the
container's command line, which every local user can read (/proc/PID/cmdline), so the storage's
URL is then written as a reference to PHLO_DAGSTER_POSTGRES_URL, which the run gets in its
environment with the other settings of the launcher's environment; phlo's own processes open
the instance with the URL from their settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

from phlo_core.lakehouse.locks import file_lock, write_atomically
from phlo_core.redact import redact
from phlo_core.runs.orphans import fail_orphaned_runs
from phlo_core.settings import PhloSettings, location_models
from phlo_core.workspace import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

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


def instance_config(settings: PhloSettings, *, run_env_from_environment: bool = False) -> str:
    """The dagster.yaml for these settings: the template, plus PostgreSQL storage if set (and
    the Docker run launcher; `run_env_from_environment`: see `run_environment`)."""
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
    # On a server, runs wait in Dagster's queue (its daemon starts them within the limits).
    text = text.replace(_DEFAULT_COORDINATOR, queued_coordinator(settings))
    if settings.phlo_run_launcher == "docker":
        return text + _docker_runs(settings, run_environment(settings, run_env_from_environment))
    # The URL (with its password) is written here because `dagster dev`, its daemon and code
    # servers read this file without phlo's settings; the file is readable by its owner only.
    return text + (
        "# Runs, event log and schedules in PostgreSQL (PHLO_DAGSTER_POSTGRES_URL).\n"
        f"storage:\n  postgres:\n    postgres_url: {json.dumps(url)}\n"
    )


_DEFAULT_COORDINATOR = (
    "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
)
# Dagster tags every run it launches with its code location's name.
LOCATION_TAG = "dagster/code_location"


def run_limits(settings: PhloSettings) -> dict[str, Any]:
    """The queue's limits: PHLO_MAX_CONCURRENT_RUNS in all, PHLO_RUNS_PER_LOCATION runs of
    each code location (each location reads one source: a backfill of a year cannot send it
    more than that many runs at once), and PHLO_RUN_TAG_LIMITS."""
    per_location = {
        "key": LOCATION_TAG,
        "value": {"applyLimitPerUniqueValue": True},
        "limit": settings.phlo_runs_per_location,
    }
    return {
        "max_concurrent_runs": settings.phlo_max_concurrent_runs,
        "tag_concurrency_limits": [per_location, *settings.run_tag_limits],
    }


def queued_coordinator(settings: PhloSettings) -> str:
    """The production instance's run coordinator: runs launched by the UI, a schedule or the
    daemon's backfills wait in Dagster's queue, and its daemon starts them within the limits."""
    config = json.dumps(run_limits(settings))
    return (
        "# Runs queue in Dagster's coordinator; the daemon starts them within these limits\n"
        "# (PHLO_MAX_CONCURRENT_RUNS, PHLO_RUNS_PER_LOCATION, PHLO_RUN_TAG_LIMITS).\n"
        "run_coordinator:\n  module: dagster.core.run_coordinator\n"
        f"  class: QueuedRunCoordinator\n  config: {config}\n"
    )


# The label on every run container, its value naming the instance that launched it
# (`phlo deploy compose down` removes its own deployment's).
RUN_CONTAINER_LABEL = "phlo.run"
_URL_VARIABLE = "PHLO_DAGSTER_POSTGRES_URL"


def instance_label(dagster_postgres_url: str) -> str:
    """A run container's label value: a digest of its instance's storage URL (one per
    deployment; the URL itself is secret)."""
    after_scheme = dagster_postgres_url.split("://", 1)[-1]  # postgresql(+psycopg2)://...
    return hashlib.sha256(after_scheme.encode()).hexdigest()[:12]


def run_environment(settings: PhloSettings, from_environment: bool = False) -> list[str]:
    """What a run in its own container is given, by name (the values stay out of dagster.yaml;
    Dagster's launcher takes them from its own environment when it launches): the phlo and
    location settings set in the environment of `phlo instance` (`from_environment`), which a
    deployment runs where its daemon and webserver start, as the compose file does, spelled as
    there. Every other command keeps the names the file holds: it may read its settings from
    .env or services.env, and its shell is not the daemon's."""
    if not from_environment:
        written = _written_run_environment(settings)
        if written is not None:
            return written
    known = {name.upper() for name in PhloSettings.model_fields}
    for model in location_models(settings):
        known |= {name.upper() for name in model.model_fields}
    return sorted({key for key in os.environ if key.upper() in known} | {_URL_VARIABLE})


def _written_run_environment(settings: PhloSettings) -> list[str] | None:
    """The names the Docker launcher of phlo's dagster.yaml passes on (None: no such file)."""
    import yaml

    try:
        text = (settings.resolved_dagster_home / "dagster.yaml").read_text()
        config = yaml.safe_load(text) if _is_ours(text) else None
    except (OSError, yaml.YAMLError):
        return None
    launcher = (config or {}).get("run_launcher") or {}
    names = (launcher.get("config") or {}).get("env_vars")
    if launcher.get("module") != "dagster_docker" or not isinstance(names, list):
        return None
    return [str(name) for name in names]


def _is_ours(text: str) -> bool:
    """Whether a dagster.yaml is phlo's (this template's or an older phlo's first line). The
    template is read here, not at import: a location's PEX does not carry it."""
    return text.startswith((TEMPLATE.read_text().splitlines()[0], _EARLIER_FIRST_LINE))


def _docker_runs(settings: PhloSettings, names: list[str]) -> str:
    config = {
        "image": settings.phlo_run_image,
        "env_vars": names,
        "container_kwargs": {
            "network_mode": "host",
            "labels": {RUN_CONTAINER_LABEL: instance_label(str(settings.dagster_postgres_url))},
        },
    }
    return (
        "# Runs, event log and schedules in PostgreSQL, its URL read from the environment.\n"
        f"storage:\n  postgres:\n    postgres_url:\n      env: {_URL_VARIABLE}\n"
        "# Each run launched by the daemon or the UI in a container of its own "
        "(PHLO_RUN_LAUNCHER=docker).\n"
        "run_launcher:\n  module: dagster_docker\n  class: DockerRunLauncher\n"
        f"  config: {json.dumps(config)}\n"
    )


def sync_instance_config(settings: PhloSettings, *, run_env_from_environment: bool = False) -> None:
    """Write DAGSTER_HOME/dagster.yaml for these settings unless it is a file of the user's."""
    home = settings.resolved_dagster_home
    config = home / "dagster.yaml"
    wanted = instance_config(settings, run_env_from_environment=run_env_from_environment)
    current = config.read_text() if config.exists() else None
    if current is None or (_is_ours(current) and current != wanted):
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


def _open(settings: PhloSettings, home: Path) -> DagsterInstance:
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    url = settings.dagster_postgres_url
    if settings.phlo_run_launcher != "docker" or url is None:
        return DagsterInstance.from_config(str(home))
    # dagster.yaml names the variable; this process has the URL in its settings, wherever
    # they came from (the environment, .env, services.env).
    overrides = {"storage": {"postgres": {"postgres_url": url}}}
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides=overrides))


def instance_for(
    settings: PhloSettings, *, run_env_from_environment: bool = False
) -> DagsterInstance:
    """The Dagster instance in DAGSTER_HOME, created on first use. Creation is serialized:
    two processes creating SQLite storage at once stamp its schema twice, which breaks every
    later run on that instance. Runs whose process is gone are marked failed here."""
    home = settings.resolved_dagster_home
    check_dagster_postgres(settings)
    with file_lock(home / ".phlo-instance.lock"):
        sync_instance_config(settings, run_env_from_environment=run_env_from_environment)
        try:
            instance = _open(settings, home)
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
