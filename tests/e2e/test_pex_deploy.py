"""The deployed shape: every code location served from its own PEX, a webserver on the
workspace `phlo deploy workspace` derives reaching them over gRPC, and a run launched over
GraphQL that executes inside the nightscout location's PEX and writes the day into the lakehouse.

The PEXes come from `pants package ::` (`make pex`), in dist/ (PHLO_PEX_DIR elsewhere).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.lakehouse.connect import query
from phlo_core.services.layout import free_port
from phlo_core.settings import load_settings
from phlo_core.workspace import DEFAULT_WORKSPACE, REPO_ROOT
from tests.conftest import TEST_SECRET
from tests.e2e.helpers import gql, launch_glucose_day, served_readings

pytestmark = pytest.mark.slow

DIST = Path(os.environ.get("PHLO_PEX_DIR", REPO_ROOT / "dist"))
DAY = dt.date(2024, 3, 5)
ZONE = "UTC"


def locations_of(workspace: Path) -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(workspace.read_text())
    found = {}
    for entry in document["load_from"]:
        spec = entry.get("python_module") or entry.get("grpc_server")
        found[spec["location_name"]] = spec
    return found


def loaded(entry: dict[str, Any]) -> bool:
    return (
        entry["loadStatus"] == "LOADED"
        and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"
    )


LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } }
} } } }"""
ASSETS = (
    """{ assetNodes { assetKey { path } isMaterializable repository { location { name } } } }"""
)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Code servers from the location PEXes, a webserver from the CLI PEX; stopped after."""
    pexes = {name: DIST / f"{name}.pex" for name in [*locations_of(DEFAULT_WORKSPACE), "phlo"]}
    missing = [str(path) for path in pexes.values() if not path.exists()]
    if missing:
        pytest.fail(f"no PEX at {', '.join(missing)}: build them with `make pex` first")
    tmp = tmp_path_factory.mktemp("deployed")
    with SampleNightscoutServer(api_secret=TEST_SECRET, timezone=ZONE) as server:
        env = {
            **os.environ,
            "PHLO_HOME": str(tmp / "home"),
            "DAGSTER_HOME": str(tmp / "home" / "dagster"),
            "PHLO_TIMEZONE": ZONE,
            "NIGHTSCOUT_URL": server.url,
            "NIGHTSCOUT_API_SECRET": TEST_SECRET,
        }
        for name in ("PEX_ROOT", "PYTHONPATH", "VIRTUAL_ENV"):
            env.pop(name, None)
        created = subprocess.run(
            [str(pexes["phlo"]), "instance"], env=env, capture_output=True, text=True, timeout=300
        )
        assert created.returncode == 0, created.stderr
        # The deployed workspace as a deployment derives it, from the PEX's workspace file.
        derived = subprocess.run(
            [str(pexes["phlo"]), "deploy", "workspace"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert derived.returncode == 0, derived.stderr
        workspace = yaml.safe_load(derived.stdout)
        processes: list[subprocess.Popen[bytes]] = []
        names: list[str] = []  # each process's log file name
        logs = tmp / "logs"
        logs.mkdir()
        try:
            for entry in workspace["load_from"]:
                spec = entry["grpc_server"]
                spec["port"] = free_port()  # the file's ports may be taken on a shared machine
                module = locations_of(DEFAULT_WORKSPACE)[spec["location_name"]]["module_name"]
                command = [str(pexes[spec["location_name"]]), "api", "grpc", "-m", module]
                command += ["-h", "127.0.0.1", "-p", str(spec["port"])]
                out = (logs / f"{spec['location_name']}.log").open("wb")
                processes.append(
                    subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
                )
                names.append(spec["location_name"])
            ports_file = tmp / "workspace.yaml"
            ports_file.write_text(yaml.safe_dump(workspace))
            web_port = free_port()
            out = (logs / "webserver.log").open("wb")
            names.append("webserver")
            processes.append(
                subprocess.Popen(
                    [str(pexes["phlo"]), "-w", str(ports_file), "-h", "127.0.0.1"]
                    + ["-p", str(web_port)],
                    env={**env, "PEX_SCRIPT": "dagster-webserver"},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
            url = f"http://127.0.0.1:{web_port}/graphql"
            deadline = time.monotonic() + 300
            entries: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                try:
                    entries = gql(url, LOCATIONS)["workspaceOrError"]["locationEntries"]
                except (urllib.error.URLError, ConnectionError):
                    entries = []
                if entries and all(loaded(e) for e in entries):
                    break
                exited = [log for p, log in zip(processes, names, strict=True) if p.poll()]
                assert not exited, [(logs / f"{n}.log").read_text()[-2000:] for n in exited]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    # The webserver asked before a code server was up: ask it to look again.
                    gql(url, "mutation { reloadWorkspace { __typename } }")
                time.sleep(2)
            yield {
                "url": url,
                "entries": entries,
                "env": env,
                "server": server,
                "logs": logs,
            }
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def test_every_location_loads_with_its_assets(deployed: dict[str, Any]) -> None:
    from phlo_core.runs.asset_index import index_of
    from phlo_core.workspace import load_definitions, location_refs

    entries = deployed["entries"]
    assert {e["name"] for e in entries} == set(locations_of(DEFAULT_WORKSPACE))
    assert all(loaded(e) for e in entries), entries
    served: dict[str, set[str]] = {}
    for node in gql(deployed["url"], ASSETS)["assetNodes"]:
        if node["isMaterializable"]:
            location = node["repository"]["location"]["name"]
            served.setdefault(location, set()).add("/".join(node["assetKey"]["path"]))
    # What the same code defines in this process (the checkout, not the PEX).
    settings = load_settings(phlo_home=Path(deployed["env"]["PHLO_HOME"]))
    wanted = index_of({r.name: load_definitions(r, settings) for r in location_refs(settings)})
    assert served == {name: set(a) for name, a in wanted.locations.items() if a}
    assert {"dlt_glucose_entries", "dlt_weather_observations"} <= set().union(*served.values())


def test_a_run_launched_over_graphql_writes_the_day(deployed: dict[str, Any]) -> None:
    _, status = launch_glucose_day(deployed["url"], DAY)
    assert status == "SUCCESS", (deployed["logs"] / "nightscout.log").read_text()[-3000:]

    settings = load_settings(phlo_home=Path(deployed["env"]["PHLO_HOME"]), phlo_timezone=ZONE)
    server = deployed["server"]
    secret_sha1 = hashlib.sha1(TEST_SECRET.encode()).hexdigest()
    readings = served_readings(server.url, secret_sha1, DAY, settings.timezone)
    stored = query(
        "select count(*), count(distinct reading_at_utc) from bronze.stg_glucose_entries",
        settings,
    ).rows
    assert stored == [(len(readings), len(readings))]
