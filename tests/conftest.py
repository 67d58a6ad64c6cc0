"""Shared fixtures: settings isolated under a temporary PHLO_HOME, and sample Nightscout servers."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.settings import PhloSettings, load_settings, location_models, use_settings
from tests.containers import Servers, container_servers, local_servers, wanted

# `second_user`: an unprivileged local user for tests of what other users can reach.
pytest_plugins = ["tests.other_user"]

TEST_SECRET = "test-api-secret-do-not-log"


def _setting_names() -> frozenset[str]:
    """The environment variables that configure phlo or a location of the workspace (each
    location's settings model says which): none leaks into a test."""
    names = {name.upper() for name in PhloSettings.model_fields}
    for model in location_models(load_settings()):
        names |= {name.upper() for name in model.model_fields}
    return frozenset(names)


SETTING_NAMES = _setting_names()


@pytest.fixture(autouse=True)
def _default_signal_handling() -> None:
    """pytest-xdist's worker processes ignore SIGINT (execnet's), and a Dagster run in the
    test's process gives SIGTERM the handler SIGINT has: a process a test starts inherited both
    ignored, and neither Ctrl-C (`phlo logs --follow`) nor terminate() stopped it. Each test
    starts with Python's own handling, as a user's shell gives a command."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the developer's .env or writes to their PHLO_HOME."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name == "DAGSTER_HOME" or name in SETTING_NAMES or name.startswith("PHLO_"):
            monkeypatch.delenv(name, raising=False)
    # Commands run directly: a test of the warm server (tests/e2e/test_server.py) turns it on.
    monkeypatch.setenv("PHLO_SERVER", "0")
    use_settings(None)
    yield
    use_settings(None)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., PhloSettings]:
    def make(home: str = "phlo", **overrides: object) -> PhloSettings:
        values: dict[str, object] = {
            "phlo_home": tmp_path / home,
            "http_backoff_seconds": 0.01,
            "http_max_attempts": 3,
            "http_timeout_seconds": 2.0,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def nightscout() -> Iterator[SampleNightscoutServer]:
    with SampleNightscoutServer(timezone="America/New_York", api_secret=TEST_SECRET) as server:
        yield server


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """A real PostgreSQL and a real S3 server (SeaweedFS), started once per test session on
    free loopback ports: in containers from phlo's images when a Docker engine answers, else
    as `phlo services up` starts them (tests/containers.py); stopped and removed after."""
    root = tmp_path_factory.mktemp("services")
    servers = container_servers if wanted() == "containers" else local_servers
    with servers(root) as running:
        yield running


_profiles = itertools.count()


@pytest.fixture
def production_profile(services: Servers) -> Callable[[], dict[str, str]]:
    """Settings (as environment variables) of a fresh production profile on the session's
    servers: its own catalog database, Dagster database, marts database and S3 prefix."""

    def make() -> dict[str, str]:
        return services.provision(f"t{os.getpid()}x{next(_profiles)}")

    return make
