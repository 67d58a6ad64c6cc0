"""Superset beside the local servers, as `phlo services up --with superset` starts it: installed
into an environment of its own, on loopback, behind a login whose password is never printed and
that another local user cannot read; stopped by `phlo services down`.

Slow: the first run on a machine installs Superset (a few minutes); later runs reuse the
environment in ~/.cache/phlo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from phlo_core.services.superset import environment_dir
from tests.other_user import OtherUser

pytestmark = pytest.mark.slow
PHLO = str(Path(sys.executable).with_name("phlo"))


def phlo(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PHLO, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PHLO_HOME": str(home), "PHLO_SERVER": "0"},
        cwd=home.parent,
        timeout=1200,
        check=False,
    )


@pytest.fixture(scope="module")
def superset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """(home, Superset's URL, the admin password) of a `services up --with superset`."""
    home = tmp_path_factory.mktemp("superset") / "phlo"
    up = phlo("services", "up", "--with", "superset", home=home)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        state = json.loads((home / "services" / "state.json").read_text())
        password = state["credentials"]["superset_admin_password"]
        assert password not in up.stdout + up.stderr, "the admin password is never printed"
        yield home, f"http://127.0.0.1:{state['superset_port']}", password
    finally:
        phlo("services", "down", "--purge", home=home)


def test_it_runs_on_loopback_from_an_environment_of_its_own(
    superset: tuple[Path, str, str],
) -> None:
    home, url, _ = superset
    assert httpx.get(f"{url}/health", timeout=10).text == "OK"
    status = phlo("services", "status", "--json", home=home)
    found = {s["name"]: s for s in json.loads(status.stdout)}
    assert found["superset"]["state"] == "running" and found["superset"]["answers"]
    assert found["superset"]["address"] == url
    assert (environment_dir() / "bin" / "superset").exists()
    # Its own SQLAlchemy 1.4, beside the locations' 2.x.
    python = str(environment_dir() / "bin" / "python")
    probe = "import sqlalchemy; print(sqlalchemy.__version__)"
    version = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert version.startswith("1.4")


def test_everything_wants_the_login(superset: tuple[Path, str, str]) -> None:
    _, url, password = superset
    assert httpx.get(f"{url}/api/v1/chart/", timeout=10).status_code == 401
    wrong = httpx.post(
        f"{url}/api/v1/security/login",
        json={"username": "admin", "password": "not-it", "provider": "db"},
        timeout=30,
    )
    assert wrong.status_code == 401
    login = httpx.post(
        f"{url}/api/v1/security/login",
        json={"username": "admin", "password": password, "provider": "db"},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    charts = httpx.get(
        f"{url}/api/v1/chart/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert charts.status_code == 200


def test_another_user_gets_neither_the_password_nor_in(
    superset: tuple[Path, str, str], second_user: OtherUser
) -> None:
    home, url, _ = superset
    state = home / "services" / "state.json"
    config = home / "services" / "superset" / "superset_config.py"
    for secret in (state, config):
        assert (secret.stat().st_mode & 0o077) == 0, secret
        read = second_user.run(["cat", str(secret)])
        assert read.returncode != 0 and "Permission denied" in read.stderr
    asked = second_user.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{url}/api/v1/dashboard/"]
    )
    assert asked.stdout == "401"


def test_down_stops_it(superset: tuple[Path, str, str]) -> None:
    home, url, _ = superset
    down = phlo("services", "down", home=home)
    assert down.returncode == 0, down.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=5)
    again = phlo("services", "up", "--with", "superset", home=home)
    assert again.returncode == 0, again.stderr[-2000:]
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200, "the same port again"
