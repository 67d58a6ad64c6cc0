"""Local servers for the production profile, for machines without Docker: a PostgreSQL (the
lake's catalog, Dagster's storage, the published marts) and a SeaweedFS S3 server (the lake's
Parquet files, bucket `lake`), on free loopback ports, everything under PHLO_HOME/services.

`up` writes PHLO_HOME/services.env, which every later `phlo` command reads beneath the
environment and `.env` (and PHLO_HOME/demo/services.env for the demo's own databases and
prefix), so `phlo services up && phlo demo` runs on PostgreSQL and S3. `down` stops what `up`
started and removes those files: phlo is back on the embedded default, the data stays.

Only their owner reaches these servers, whoever else uses the machine:
- PostgreSQL wants the generated password on every connection, over its socket as over TCP
  (scram-sha-256; pg_hba.conf is written at every start), and its socket folder is 0700.
- SeaweedFS's internal ports (master, volume, filer, admin, their gRPC ports) refuse clients
  without this install's keys: a CA and a certificate generated at the first `up` (mutual TLS
  on every internal HTTP and gRPC port) and signing keys for volume and filer reads and
  writes, in PHLO_HOME/services/s3/security.toml (0600), which `weed mini` is pointed at
  (-config_dir). Only the S3 API, with its access keys, gives access to the lake.
- Everything lives in owner-only folders (0700) and files (0600). As root, PostgreSQL runs as
  the `postgres` user, which cannot enter a private PHLO_HOME (under /root, say): its files
  live in a folder phlo creates for it in that user's home, and no folder phlo did not create
  ever has its mode changed.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from phlo_core.lakehouse.locks import file_lock
from phlo_core.services.broker import (
    broker_answers,
    broker_dir,
    broker_running,
    broker_start,
    broker_stop,
    broker_url,
)
from phlo_core.services.dashboards import (
    Dashboard,
    DashboardError,
    export_dashboards,
    import_dashboards,
    superset_session,
)
from phlo_core.services.layout import (
    BUCKET,
    PROFILES,
    ROLE,
    SECURITY,
    WEED_PORTS,
    Layout,
    ServiceError,
    ServicePortError,
    ServiceStatus,
    answers_tcp,
    credentials,
    free_port,
    layout,
    layout_at,
    own_folder,
    port_in_use,
    profile_names,
    read_state,
    write_private_file,
    write_state,
)
from phlo_core.services.postgres import (
    pg_provision,
    pg_running,
    pg_start,
    pg_stop,
    postgres_home_folder,
)
from phlo_core.services.s3 import s3_bucket_answers, s3_running, s3_start, s3_stop
from phlo_core.services.superset import (
    ADMIN,
    superset_answers,
    superset_running,
    superset_start,
    superset_stop,
)
from phlo_core.setting_sources import SERVICES_ENV
from phlo_core.settings import PhloSettings

_ADMIN_KEY = "superset_admin_password"  # in the state file's credentials


def provision(settings: PhloSettings, profile: str) -> dict[str, str]:
    """Databases and a prefix for one more profile on the running services; its settings."""
    with _locked(settings) as root:
        state = read_state(root)
        where = layout_at(root, state)
        if not pg_running(where) or s3_running(where) is None:
            raise ServiceError("the services are not running: `phlo services up` first")
        creds = state["credentials"]
        pg_provision(state["pg_port"], creds["pg_password"], creds["role_password"], [profile])
        return profile_values(state, profile)


def profile_values(state: dict[str, Any], profile: str) -> dict[str, str]:
    creds = state["credentials"]
    pg, s3 = state["pg_port"], state["s3_port"]
    lake_db, dagster_db, marts_db, prefix = profile_names(profile)
    password = creds["role_password"]
    url = f"postgresql://{ROLE}:{password}@127.0.0.1:{pg}"
    values = {
        "PHLO_LAKE_CATALOG": (
            f"postgres:dbname={lake_db} host=127.0.0.1 port={pg} user={ROLE} password={password}"
        ),
        "PHLO_LAKE_DATA_PATH": f"s3://{BUCKET}/{prefix}",
        "PHLO_S3_ENDPOINT": f"http://127.0.0.1:{s3}",
        "PHLO_S3_ACCESS_KEY_ID": creds["s3_access_key"],
        "PHLO_S3_SECRET_ACCESS_KEY": creds["s3_secret_key"],
        "PHLO_S3_REGION": "us-east-1",
        "PHLO_S3_URL_STYLE": "path",
        "PHLO_DAGSTER_POSTGRES_URL": f"{url}/{dagster_db}",
        "PHLO_PUBLISH_POSTGRES_URL": f"{url}/{marts_db}",
    }
    if "broker_port" in state:
        # Each profile's runs on its own workers: a database of the broker each (a worker
        # of one profile never takes a step of another's, which would write to its lake).
        url = broker_url(state["broker_port"], creds["broker_password"])
        values["PHLO_CELERY_BROKER_URL"] = url[: url.rindex("/")] + f"/{_database(profile)}"
        values["PHLO_EXECUTOR"] = "celery"
    return values


def _database(profile: str) -> int:
    """The broker's database of a profile (Redis has 16): main 0, demo 1, others from 2."""
    if profile in PROFILES:
        return PROFILES.index(profile)
    return 2 + int(hashlib.sha256(profile.encode()).hexdigest(), 16) % 14


def _profile_files(settings: PhloSettings) -> dict[str, Path]:
    return {"main": settings.home / SERVICES_ENV, "demo": settings.home / "demo" / SERVICES_ENV}


def _write_profile_files(settings: PhloSettings, state: dict[str, Any]) -> None:
    for profile, path in _profile_files(settings).items():
        lines = [
            "# Written by `phlo services up`; removed by `phlo services down`. Settings in the",
            "# environment or .env take precedence over these.",
            *[f"{key}='{value}'" for key, value in profile_values(state, profile).items()],
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private_file(path, "\n".join(lines) + "\n")


@contextmanager
def _locked(settings: PhloSettings) -> Iterator[Path]:
    """PHLO_HOME/services (owner only), held for the block: its path."""
    root = settings.home / "services"
    root.parent.mkdir(parents=True, exist_ok=True)
    own_folder(root)
    with file_lock(root / ".lock"):
        yield root


def _choose_port(wanted: int | None, kept: int | None, what: str, option: str) -> int:
    if wanted is not None:
        if port_in_use(wanted):
            raise ServicePortError(
                f"port {wanted} for {what} is in use: choose another with {option}"
            )
        return wanted
    if kept is not None and not port_in_use(kept):
        return kept
    return free_port()


def _stop_servers(where: Layout) -> None:
    broker_stop(where)
    superset_stop(where)
    pg_stop(where)
    s3_stop(where)


def up(
    settings: PhloSettings,
    *,
    pg_port: int | None = None,
    s3_port: int | None = None,
    with_superset: bool = False,
    with_workers: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[ServiceStatus]:
    """Start (or keep running) both servers, provision them and write the profile files; with
    `with_superset`, Superset too (installed first if needed, `progress` told how it goes);
    with `with_workers`, the Celery workers' broker (and the profiles run their steps there)."""
    with _locked(settings) as root:
        state = read_state(root)
        creds = credentials(state)
        creds.setdefault("role_password", secrets.token_urlsafe(18))
        if state.get("security") != SECURITY:
            # Started by an older phlo, without these protections: once more with them.
            _stop_servers(layout_at(root, state))
        if os.geteuid() == 0 and "pg_root" not in state:
            state["pg_root"] = str(postgres_home_folder(root))
            write_state(layout_at(root, state), state)  # recorded at once: a purge finds it
        where = layout_at(root, state)
        if pg_running(where):
            if pg_port is not None and pg_port != state.get("pg_port"):
                raise ServiceError(
                    f"PostgreSQL already runs on port {state.get('pg_port')}: "
                    "`phlo services down` first to move it"
                )
        else:
            state["pg_port"] = _choose_port(
                pg_port, state.get("pg_port"), "PostgreSQL", "--pg-port"
            )
            write_state(where, state)
            pg_start(where, state["pg_port"], creds["pg_password"])
        pg_provision(state["pg_port"], creds["pg_password"], creds["role_password"], list(PROFILES))
        if s3_running(where) is None:
            port = _choose_port(s3_port, state.get("s3_port"), "S3", "--s3-port")
            kept = state.get("weed_ports", {})
            ports = {name: _choose_port(None, kept.get(name), name, "") for name in WEED_PORTS}
            s3_start(where, port, ports, creds)
            state["s3_port"], state["weed_ports"] = port, ports
        elif s3_port is not None and s3_port != state.get("s3_port"):
            raise ServiceError(
                f"S3 already runs on port {state.get('s3_port')}: `phlo services down` first"
            )
        # Once set up, the broker runs with the others (the profiles' steps go there).
        if (with_workers or "broker_port" in state) and broker_running(where) is None:
            creds.setdefault("broker_password", secrets.token_urlsafe(24))
            state["broker_port"] = _choose_port(None, state.get("broker_port"), "Redis", "")
            write_state(where, state)
            broker_start(where, state["broker_port"], creds["broker_password"])
        state["security"] = SECURITY
        write_state(where, state)
        _write_profile_files(settings, state)
        if with_superset and superset_running(where) is None:
            creds.setdefault("superset_secret_key", secrets.token_urlsafe(42))
            creds.setdefault(_ADMIN_KEY, secrets.token_urlsafe(18))
            state["superset_port"] = _choose_port(None, state.get("superset_port"), "Superset", "")
            write_state(where, state)
            tell = progress or (lambda _: None)
            if superset_start(where, state["superset_port"], creds, tell):
                # A new instance gets the dashboards, on the services' own published marts;
                # later, `phlo dashboards import` (a UI edit is never overwritten unasked).
                tell("importing the dashboards (infra/superset)")
                publish_url = profile_values(state, "main")["PHLO_PUBLISH_POSTGRES_URL"]
                with superset_session(_superset_url(state), ADMIN, creds[_ADMIN_KEY]) as api:
                    import_dashboards(api, publish_url)
        return _statuses(where, state)


def _superset_url(state: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{state['superset_port']}"


def dashboards_import(settings: PhloSettings, target: PhloSettings) -> list[Dashboard]:
    """Import the dashboards bundle into this home's running Superset, reading the marts
    `target`'s settings publish (PHLO_PUBLISH_POSTGRES_URL)."""
    url, password = superset_login(settings)
    if target.phlo_publish_postgres_url is None:
        raise DashboardError(
            "PHLO_PUBLISH_POSTGRES_URL is not set: the dashboards read the marts published "
            "to PostgreSQL (`phlo services up` sets it)"
        )
    with superset_session(url, ADMIN, password) as api:
        return import_dashboards(api, target.phlo_publish_postgres_url.get_secret_value())


def dashboards_export(settings: PhloSettings, folder: Path) -> list[str]:
    """Write what this home's running Superset holds into the bundle `folder`; the files
    that changed."""
    url, password = superset_login(settings)
    with superset_session(url, ADMIN, password) as api:
        return export_dashboards(api, folder)


def superset_login(settings: PhloSettings) -> tuple[str, str]:
    """(the URL, the admin password) of the Superset this home's services run."""
    where = layout(settings)
    state = read_state(where.root)
    if "superset_port" not in state or superset_running(where) is None:
        raise ServiceError("Superset is not running: `phlo services up --with superset` first")
    return _superset_url(state), state["credentials"][_ADMIN_KEY]


def down(settings: PhloSettings, *, purge: bool = False) -> list[ServiceStatus]:
    """Stop what `up` started and remove the profile files; the data stays for the next `up`,
    unless `purge`: then every file `up` made goes too (PostgreSQL's wherever it lives)."""
    with _locked(settings) as root:
        state = read_state(root)
        where = layout_at(root, state)
        for path in _profile_files(settings).values():
            path.unlink(missing_ok=True)
        _stop_servers(where)
        statuses = _statuses(where, state)
        if purge:
            # Only a folder phlo made: inside root, or marked as phlo's in postgres's home.
            if (where.pg_root / "PHLO_HOME").exists():
                shutil.rmtree(where.pg_root, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
        return statuses


def status(settings: PhloSettings) -> list[ServiceStatus]:
    where = layout(settings)
    return _statuses(where, read_state(where.root))


def _statuses(where: Layout, state: dict[str, Any]) -> list[ServiceStatus]:
    result = []
    pg_port, s3_port = state.get("pg_port"), state.get("s3_port")
    if pg_port is None:
        result.append(ServiceStatus("postgres", "not set up", None, False))
    else:
        running = pg_running(where)
        result.append(
            ServiceStatus(
                "postgres",
                "running" if running else "stopped",
                f"127.0.0.1:{pg_port}",
                running and answers_tcp(pg_port),
                f"databases {', '.join(d for p in PROFILES for d in profile_names(p)[:3])}; "
                f"data {where.pg_data}",
            )
        )
    if s3_port is None:
        result.append(ServiceStatus("s3", "not set up", None, False))
    else:
        running = s3_running(where) is not None
        result.append(
            ServiceStatus(
                "s3",
                "running" if running else "stopped",
                f"http://127.0.0.1:{s3_port}",
                running and s3_bucket_answers(s3_port, state["credentials"]),
                f"bucket {BUCKET}; data {where.s3_dir / 'data'}",
            )
        )
    broker_port = state.get("broker_port")
    if broker_port is not None:
        running = broker_running(where) is not None
        password = state["credentials"]["broker_password"]
        result.append(
            ServiceStatus(
                "broker",
                "running" if running else "stopped",
                f"redis://127.0.0.1:{broker_port}",
                running and broker_answers(broker_port, password),
                f"Celery's broker for `phlo worker start`; data {broker_dir(where)}",
            )
        )
    superset_port = state.get("superset_port")
    if superset_port is not None:
        running = superset_running(where) is not None
        result.append(
            ServiceStatus(
                "superset",
                "running" if running else "stopped",
                _superset_url(state),
                running and superset_answers(superset_port),
                f"user {ADMIN}; its password is credentials.{_ADMIN_KEY} in {where.state_file}",
            )
        )
    return result
