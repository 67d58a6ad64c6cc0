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
