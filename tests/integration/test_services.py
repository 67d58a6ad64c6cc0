"""`phlo services up | status | down` as a user runs them: real PostgreSQL and SeaweedFS
processes under PHLO_HOME, and every later command on the profile they write."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from phlo_core.services import control as local_services
from phlo_core.settings import load_settings

PHLO = str(Path(sys.executable).with_name("phlo"))


def phlo(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHLO_")}
    return subprocess.run(
        [PHLO, *args],
        env={**env, "PHLO_HOME": str(home)},
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=180,
    )


def statuses(home: Path) -> dict[str, dict]:
    done = phlo(home, "services", "status", "--json")
    return {entry["name"]: entry for entry in json.loads(done.stdout)}


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A PHLO_HOME whose services' files all go afterwards (as root, PostgreSQL's live in the
    postgres user's home, outside it)."""
    home = tmp_path / "home"
    try:
        yield home
    finally:
        local_services.down(load_settings(phlo_home=home), purge=True)


def test_up_twice_status_and_down(home: Path) -> None:
    assert statuses(home) == {
        "postgres": {
            "name": "postgres",
            "state": "not set up",
            "address": None,
            "answers": False,
            "detail": "",
        },
        "s3": {
            "name": "s3",
            "state": "not set up",
            "address": None,
            "answers": False,
            "detail": "",
        },
    }
    try:
        first = phlo(home, "services", "up")
        assert first.returncode == 0, first.stderr
        running = statuses(home)
        assert {name: (s["state"], s["answers"]) for name, s in running.items()} == {
            "postgres": ("running", True),
            "s3": ("running", True),
        }
        # Up again: the same servers keep running on the same addresses.
        again = phlo(home, "services", "up")
        assert again.returncode == 0, again.stderr
        assert statuses(home) == running

        # Every later command reads the profile they wrote: settings point at the servers.
        profile = (home / "services.env").read_text()
        assert oct((home / "services.env").stat().st_mode)[-3:] == "600"
        pg_port = running["postgres"]["address"].rsplit(":", 1)[1]
        assert f"port={pg_port}" in profile
        settings = load_settings(phlo_home=home)
        assert settings.lake_catalog.startswith("postgres:dbname=phlo_lake ")
        assert settings.lake_data_path == "s3://lake/ducklake/"
        assert settings.phlo_s3_endpoint == running["s3"]["address"]
        # ... beneath the environment, which still wins.
        assert (
            load_settings(phlo_home=home, phlo_lake_data_path="/tmp/x").lake_data_path == "/tmp/x/"
        )
        query = phlo(home, "query", "select 42 as answer")
        assert query.returncode == 1
        assert query.stderr.startswith(
            "phlo: error: the lakehouse is empty: no catalog in postgres:"
        )
        assert "password=***" in query.stderr
        # The secrets it generated are in no output.
        state = json.loads((home / "services" / "state.json").read_text())
        for secret in state["credentials"].values():
            if len(secret) > 12:
                assert secret not in first.stdout + first.stderr + query.stdout + query.stderr
    finally:
        down = phlo(home, "services", "down")
    assert down.returncode == 0, down.stderr
    stopped = statuses(home)
    assert {name: (s["state"], s["answers"]) for name, s in stopped.items()} == {
        "postgres": ("stopped", False),
        "s3": ("stopped", False),
    }
    assert not (home / "services.env").exists()
    assert load_settings(phlo_home=home).lake_catalog.startswith("sqlite:")
    data = Path(stopped["postgres"]["detail"].rsplit("; data ", 1)[1])
    assert (data / "PG_VERSION").exists()  # data kept


def test_a_port_in_use_is_a_usage_error(home: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        done = phlo(home, "services", "up", "--pg-port", str(port))
    finally:
        taken.close()
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"phlo: error: port {port} for PostgreSQL is in use: choose another with --pg-port"
    )
    assert statuses(home)["postgres"]["state"] == "not set up"
    bad = phlo(home, "services", "up", "--s3-port", "80")
    assert bad.returncode == 2 and "--s3-port must be a port from 1024 to 65535" in bad.stderr


def test_up_with_workers_starts_a_broker_only_its_owner_reaches(home: Path) -> None:
    """`--with workers`: Debian's redis-server on loopback wanting the generated password,
    each profile's runs on a database of their own, the executor set; workers start and show;
    a plain `up` after `down` brings the broker back (the profiles still send their steps)."""
    up = phlo(home, "services", "up", "--with", "workers")
    assert up.returncode == 0, up.stderr
    assert "phlo worker start" in up.stderr
    broker = statuses(home)["broker"]
    assert (broker["state"], broker["answers"]) == ("running", True)
    port = int(broker["address"].rsplit(":", 1)[1])
    main = load_settings(phlo_home=home)
    demo = load_settings(phlo_home=home / "demo")
    assert main.phlo_executor == demo.phlo_executor == "celery"
    urls = [s.phlo_celery_broker_url for s in (main, demo)]
    assert urls[0] is not None and urls[1] is not None
    assert urls[0].get_secret_value().endswith(f"127.0.0.1:{port}/0")
    assert urls[1].get_secret_value().endswith(f"127.0.0.1:{port}/1")
    password = json.loads((home / "services" / "state.json").read_text())["credentials"][
        "broker_password"
    ]
    # Without the password (any other local user): refused.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
        answer = plain.recv(256)
    assert answer.startswith(b"-NOAUTH"), answer
    config = home / "services" / "broker" / "redis.conf"
    assert oct(config.stat().st_mode)[-3:] == "600"

    listed = phlo(home, "worker", "list")
    assert listed.returncode == 0 and "no worker answers" in listed.stdout, listed.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHLO_")}
    worker = subprocess.Popen(
        [PHLO, "worker", "start", "--name", "w1"],
        env={**env, "PHLO_HOME": str(home)},
        cwd=home.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        found: list[dict] = []
        for _ in range(60):
            found = json.loads(phlo(home, "worker", "list", "--json").stdout or "[]")
            if found:
                break
        assert [w["name"].split("@")[0] for w in found] == ["w1"]
    finally:
        worker.terminate()
        _, stderr = worker.communicate(timeout=60)
    assert password not in stderr + up.stdout + up.stderr + listed.stdout

    assert phlo(home, "services", "down").returncode == 0
    assert statuses(home)["broker"]["state"] == "stopped"
    again = phlo(home, "services", "up")
    assert again.returncode == 0, again.stderr
    assert statuses(home)["broker"]["answers"] is True


def test_a_worker_without_a_broker_says_why_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    unset = phlo(home, "worker", "start")
    assert unset.returncode == 1
    assert unset.stderr.strip().splitlines() == [
        "phlo: error: PHLO_CELERY_BROKER_URL is not set: `phlo services up --with workers` "
        "starts a broker and sets it, or set it to a Redis of your own"
    ]
    usage = phlo(home, "worker", "start", "--concurrency", "0")
    assert usage.returncode == 2 and "--concurrency must be 1 or more" in usage.stderr
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHLO_")}
    down = subprocess.run(
        [PHLO, "worker", "list"],
        env={
            **env,
            "PHLO_HOME": str(home),
            "PHLO_CELERY_BROKER_URL": f"redis://:hunter2-broker@127.0.0.1:{port}/0",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 1, down.stderr
    [line] = down.stderr.strip().splitlines()
    assert line.startswith("phlo: error: cannot reach the workers' broker: ")
    assert "hunter2-broker" not in down.stdout + down.stderr
