"""`phlo services`, `phlo instance` and `phlo maintenance`: the servers and storage phlo runs on."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Literal

from cyclopts import App, Parameter

from phlo_cli.common import (
    EXIT_FAILED,
    UsageError,
    command_settings,
    err,
    follow_services,
    shown,
)

if TYPE_CHECKING:
    from phlo_core.settings import PhloSettings

services_app = App(
    name="services",
    help="Local PostgreSQL and S3 servers for the production profile, without Docker.",
)


def _show_services(statuses: list[object], as_json: bool) -> None:
    from dataclasses import asdict

    from phlo_cli.render import to_table

    if as_json:
        import json

        print(json.dumps([asdict(status) for status in statuses]))  # pyright: ignore
        return
    rows = [
        (s.name, s.state, s.address or "-", "yes" if s.answers else "no", s.detail)  # pyright: ignore
        for s in statuses
    ]
    print(to_table(["service", "state", "address", "answers", "detail"], rows))


def _show_run_queue(settings: PhloSettings) -> None:
    """The production instance's run queue under the services' table (when the settings have
    one): its limits and the runs in it."""
    from phlo_core.runs.instance import InstanceError
    from phlo_core.runs.status import run_queue

    try:
        queue = run_queue(settings)
    except InstanceError:
        return  # the table above says what does not answer
    if queue is not None:
        print(queue.summary())


@services_app.command(name="up")
def services_up(
    *,
    pg_port: int | None = None,
    s3_port: int | None = None,
    with_: Annotated[
        tuple[Literal["superset", "workers"], ...], Parameter(name="--with", negative=())
    ] = (),
) -> int:
    """Start PostgreSQL and a SeaweedFS S3 server on loopback (again: keeps them running).

    Creates the bucket `lake`, the role `phlo` and the databases for the lake's catalog,
    Dagster's storage and the published marts (and the demo's own), and writes
    PHLO_HOME/services.env: from then on every phlo command (and `dagster dev` through the
    dagster.yaml phlo writes) runs on this production profile. Data and logs stay under
    PHLO_HOME/services (as root, PostgreSQL's files are in a folder phlo makes for the
    postgres user, ~postgres/phlo/<id>: `phlo services status` shows it). Only their owner
    reaches them: PostgreSQL wants the generated password on every connection, SeaweedFS's
    internal ports this install's certificate and keys.

    Parameters
    ----------
    pg_port
        PostgreSQL's port (default: the one used before, else a free one).
    s3_port
        The S3 API's port (default: the one used before, else a free one).
    with_
        Also start `superset` (Apache Superset on loopback, for dashboards on the published
        marts): installed at the first use into an environment of its own in ~/.cache/phlo
        (a few minutes, shown as it goes), its login `admin` with a generated password kept in
        the services' state file (never printed). Or `workers`: a broker for Celery
        workers (Debian's redis-server on loopback, with a generated password); the profile's
        runs launched by Dagster (UI, schedules, `phlo backfill --submit`) then execute their
        steps on the workers `phlo worker start` starts.
    """
    from phlo_core.services.control import up
    from phlo_core.services.layout import ServiceError, ServicePortError

    for option, port in (("--pg-port", pg_port), ("--s3-port", s3_port)):
        if port is not None and not 1024 <= port <= 65535:
            raise UsageError(f"{option} must be a port from 1024 to 65535, not {port}")
    settings = command_settings()
    try:
        statuses = up(
            settings,
            pg_port=pg_port,
            s3_port=s3_port,
            with_superset="superset" in with_,
            with_workers="workers" in with_,
            progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True),
        )
    except ServicePortError as exc:
        raise UsageError(str(exc)) from None
    except ServiceError as exc:
        err(str(exc))
        return EXIT_FAILED
    follow_services(settings)
    _show_services(list(statuses), as_json=False)
    print(
        f"\nphlo now runs on these services (settings in {shown(settings.home / 'services.env')}"
        "); `phlo services down` returns to the embedded default.",
        file=sys.stderr,
    )
    if "workers" in with_:
        print(
            "Runs Dagster launches now execute their steps on Celery workers: start them with "
            "`phlo worker start` (here or on any machine that reaches the broker, the catalog "
            "and the bucket).",
            file=sys.stderr,
        )
    return 0


@services_app.command(name="down")
def services_down(*, purge: bool = False) -> int:
    """Stop the servers `phlo services up` started; their data stays for the next `up`.

    phlo commands use the embedded default (or your own settings) again.

    Parameters
    ----------
    purge
        Also delete everything `up` made: the servers' data, keys and logs, PostgreSQL's files
        wherever they live (as root, ~postgres/phlo/<id>). The lakehouse is gone with them.
    """
    from phlo_core.services.control import down
    from phlo_core.services.layout import ServiceError

    settings = command_settings()
    try:
        statuses = down(settings, purge=purge)
    except ServiceError as exc:
        err(str(exc))
        return EXIT_FAILED
    follow_services(settings)
    _show_services(list(statuses), as_json=False)
    return 0


@services_app.command(name="status")
def services_status(*, as_json: Annotated[bool, Parameter(name="--json")] = False) -> int:
    """Each service, its address and whether it answers. Exit 1 when one set up is not running.

    Parameters
    ----------
    as_json
        A JSON list of {name, state, address, answers, detail}.
    """
    from phlo_core.services.control import status

    settings = command_settings(writes=False)
    statuses = status(settings)
    _show_services(list(statuses), as_json=as_json)
    if not as_json:
        _show_run_queue(settings)
    set_up = [s for s in statuses if s.state != "not set up"]
    return 0 if all(s.answers for s in set_up) else EXIT_FAILED


def instance() -> int:
    """Create the Dagster instance for the settings and print its dagster.yaml's path.

    What a deployment's `dagster-webserver`, `dagster-daemon` and code servers read
    (DAGSTER_HOME): SQLite storage under it by default, PostgreSQL when
    PHLO_DAGSTER_POSTGRES_URL is set; run monitoring; phlo's log lines captured into the event
    log; with PHLO_RUN_LAUNCHER=docker, Dagster's Docker run launcher, passing each run the
    phlo and location settings of this environment by name (run it where the daemon and the
    webserver start). phlo rewrites the file when the settings change; a dagster.yaml of your
    own (without phlo's first line) is left as it is.
    """
    from phlo_core.runs.instance import InstanceError, instance_config, instance_for

    settings = command_settings()
    try:
        # The settings a run in a container of its own gets: those of this environment.
        instance_for(settings, run_env_from_environment=True).dispose()
    except InstanceError as exc:
        err(str(exc))
        return EXIT_FAILED
    config = settings.resolved_dagster_home / "dagster.yaml"
    print(config)
    if config.read_text() != instance_config(settings):
        print(f"{shown(config)} is your own (no phlo first line): left as it is", file=sys.stderr)
    return 0


def maintenance(*, retention_days: int | None = None) -> int:
    """Lakehouse housekeeping: expire old snapshots, delete unreferenced files, merge small ones.

    Also runs every night as the `lakehouse_maintenance` job's schedule. Safe beside running
    materializations (it waits for the lakehouse's writer lock).

    Parameters
    ----------
    retention_days
        Keep snapshots (and time travel) this many days back; default
        PHLO_SNAPSHOT_RETENTION_DAYS (7).
    """
    from phlo_core.lakehouse.connect import LakehouseError, check_catalog
    from phlo_core.lakehouse.maintenance import maintain

    settings = command_settings()
    if retention_days is not None and retention_days < 0:
        raise UsageError("--retention-days must be 0 or more")
    try:
        check_catalog(settings)
        report = maintain(settings, retention_days)
    except LakehouseError as exc:
        err(str(exc))
        return EXIT_FAILED
    print(f"maintenance: {report.summary()}")
    return 0
