"""The metadata catalog as a user meets it after the demo: `phlo catalog sync` writes every
dataset, column, test and lineage edge into DataHub Lite through DataHub's own library (in its
own environment); `phlo catalog search|show|lineage` read it back.

What the catalog holds is checked against DataHub Lite's own store (read here with sqlite3) and
against the dbt manifests, recomputed here: the edges, the column descriptions, each test's
latest result (a real failing dbt test, then passing again), idempotence and soft deletion."""

from __future__ import annotations

import http.server
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phlo_core.dbt.docs import dbt_projects
from phlo_core.dbt.project import project_manifest
from phlo_core.settings import load_settings

pytestmark = pytest.mark.slow  # the demo, then five syncs and two runs: about 110 s
PHLO = str(Path(sys.executable).with_name("phlo"))
PUBLISH_URL = "postgresql://phlo:never-shown-1234@127.0.0.1:1/phlo_analytics"
TOKEN = "datahub-token-never-shown-5678"


def phlo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PHLO, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PHLO_SERVER": "0", **env},
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a home where `phlo demo` ran and the catalog was synced once (with a
    PostgreSQL the marts publish to: its name only, nothing connects to it)."""
    root = tmp_path_factory.mktemp("catalog")
    made = phlo("demo", env={"PHLO_HOME": str(root / "home")})
    assert made.returncode == 0, made.stderr[-3000:]
    env = {"PHLO_HOME": str(root / "home" / "demo"), "PHLO_PUBLISH_POSTGRES_URL": PUBLISH_URL}
    synced = phlo("catalog", "sync", env=env)
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert "PHLO_PUBLISH" not in synced.stdout and "never-shown" not in synced.stdout
    yield env


def lite(env: dict[str, str]) -> Path:
    return Path(env["PHLO_HOME"]) / "catalog" / "datahub-lite.sqlite"


def aspects(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Lite's latest aspects (version 0), urn -> aspect name -> JSON."""
    con = sqlite3.connect(lite(env))
    try:
        rows = con.execute(
            "select urn, aspect_name, metadata from metadata_aspect_v2 where version = 0"
        ).fetchall()
    finally:
        con.close()
    found: dict[str, dict[str, Any]] = {}
    for urn, name, metadata in rows:
        found.setdefault(urn, {})[name] = json.loads(metadata)
    return found


def urn(platform: str, name: str) -> str:
    return f"urn:li:dataset:(urn:li:dataPlatform:{platform},{name},PROD)"


def manifests(env: dict[str, str]) -> list[dict[str, Any]]:
    settings = load_settings(phlo_home=Path(env["PHLO_HOME"]))
    return [json.loads(project_manifest(p, settings).read_text()) for p in dbt_projects()]


def relation(node: dict[str, Any]) -> str:
    name = node.get("identifier") or node.get("alias") or node["name"]
    return f"{node['database']}.{node['schema']}.{name}".lower()


def expected_edges(env: dict[str, str]) -> set[tuple[str, str]]:
    """From the manifests alone: each model's dependencies (a source another project's model
    writes is that model), each ingestion table's source APIs (its source's meta), and each
    mart to its published copy."""
    edges = set()
    for manifest in manifests(env):
        everything = {**manifest["nodes"], **manifest["sources"]}
        for node in manifest["nodes"].values():
            if node["resource_type"] != "model":
                continue
            for parent in node["depends_on"]["nodes"]:
                edges.add(
                    (urn("duckdb", relation(everything[parent])), urn("duckdb", relation(node)))
                )
            if node["schema"] == "marts":
                published = urn("postgres", f"phlo_analytics.marts.{node['name']}")
                edges.add((urn("duckdb", relation(node)), published))
        for source in manifest["sources"].values():
            apis = (source.get("meta") or {}).get("source_api") or []
            for api in [apis] if isinstance(apis, dict) else apis:
                edges.add((urn(api["platform"], api["name"]), urn("duckdb", relation(source))))
    return edges


def test_lineage_is_the_manifests_edges_plus_ingestion_and_publishing(
    demo: dict[str, str],
) -> None:
    stored = aspects(demo)
    edges = {
        (up["dataset"], down)
        for down, a in stored.items()
        for up in (a.get("upstreamLineage") or {}).get("upstreams", [])
    }
    expected = expected_edges(demo)
    assert edges == expected
    # Insights' sources are the domains' models, not names of their own.
    mart = urn("duckdb", "lake.marts.mrt_glucose_weather_daily")
    cross = {(u, d) for u, d in edges if d == mart}
    assert cross == {
        (
            urn("duckdb", "lake.silver.fct_daily_glucose_metrics"),
            urn("duckdb", "lake.marts.mrt_glucose_weather_daily"),
        ),
        (
            urn("duckdb", "lake.silver.fct_daily_weather"),
            urn("duckdb", "lake.marts.mrt_glucose_weather_daily"),
        ),
    }
    # Every end of an edge is a dataset the catalog describes.
    for up, down in edges:
        assert "datasetProperties" in stored[up] and "datasetProperties" in stored[down]


def test_every_mart_column_has_its_dbt_description_and_the_lakehouse_type(
    demo: dict[str, str],
) -> None:
    stored = aspects(demo)
    marts = 0
    for manifest in manifests(demo):
        for node in manifest["nodes"].values():
            if node["resource_type"] != "model" or node["schema"] != "marts":
                continue
            marts += 1
            for copy in (
                urn("duckdb", relation(node)),
                urn("postgres", f"phlo_analytics.marts.{node['name']}"),
            ):
                fields = {f["fieldPath"]: f for f in stored[copy]["schemaMetadata"]["fields"]}
                documented = {name: c["description"] for name, c in node["columns"].items()}
                assert set(fields) == set(documented), node["name"]
                for name, description in documented.items():
                    assert description.strip(), f"{node['name']}.{name} has no description"
                    assert fields[name]["description"] == description.strip()
                    assert fields[name]["nativeDataType"] not in ("", "unknown")
    assert marts >= 9


def test_show_search_and_lineage_read_it_back(demo: dict[str, str]) -> None:
    tree = phlo("catalog", "lineage", "mrt_glucose_weather_daily", "--upstream", env=demo)
    assert tree.returncode == 0, tree.stderr
    for chain in (
        "nightscout: api/v1/entries",
        "open-meteo: v1/archive",
        "lake.raw.glucose_entries",
        "lake.bronze.stg_weather_observations",
    ):
        assert chain in tree.stdout, tree.stdout
    as_json = json.loads(
        phlo("catalog", "lineage", "mrt_glucose_weather_daily", "--json", env=demo).stdout
    )

    def leaves(node: dict[str, Any]) -> set[str]:
        if not node["children"]:
            return {node["name"]}
        return set().union(*(leaves(c) for c in node["children"]))

    assert leaves(as_json) == {"api/v1/entries", "v1/archive", "v1/forecast"}
    down = json.loads(
        phlo(
            "catalog",
            "lineage",
            "raw.glucose_entries",
            "--downstream",
            "--depth",
            "1",
            "--json",
            env=demo,
        ).stdout
    )
    assert [c["name"] for c in down["children"]] == ["lake.bronze.stg_glucose_entries"]

    shown = json.loads(phlo("catalog", "show", "mrt_glucose_risk_daily", "--json", env=demo).stdout)
    assert shown["layer"] == "marts" and shown["location"] == "nightscout"
    # The readings, and the daily metrics whose days it covers.
    assert shown["upstream"] == [
        "lake.silver.fct_daily_glucose_metrics",
        "lake.silver.fct_glucose_readings",
    ]
    assert shown["downstream"] == ["phlo_analytics.marts.mrt_glucose_risk_daily"]
    assert {"unique_mrt_glucose_risk_daily_reading_date"} <= {t["name"] for t in shown["tests"]}
    assert all(t["result"] in ("SUCCESS", "") for t in shown["tests"])

    found = json.loads(phlo("catalog", "search", "glycemia risk", "--json", env=demo).stdout)
    assert {d["name"] for d in found} >= {"lake.marts.mrt_glucose_risk_daily"}

    for args, code in (
        (("show", "no_such_table"), 1),
        (("lineage", "mrt_glucose_overview", "--upstream", "--downstream"), 2),
        (("lineage", "mrt_glucose_overview", "--depth", "0"), 2),
        (("search", " "), 2),
    ):
        wrong = phlo("catalog", *args, env=demo)
        assert wrong.returncode == code, (args, wrong.stderr)
        assert wrong.stderr.startswith("phlo: error: ") and len(wrong.stderr.splitlines()) == 1


def test_datahubs_own_lite_command_reads_the_catalog(demo: dict[str, str], tmp_path: Path) -> None:
    """`datahub lite` (DataHub's CLI, in its environment) on the home's file, configured as
    DataHub documents it (~/.datahubenv)."""
    from phlo_core.catalog.sync import ENVIRONMENT

    (tmp_path / ".datahubenv").write_text(
        "gms:\n  server: http://127.0.0.1:9\n"  # `datahub` insists on a gms entry
        f"lite:\n  type: sqlite\n  config:\n    file: {lite(demo)}\n"
    )
    mart = urn("duckdb", "lake.marts.mrt_glucose_weather_daily")
    got = subprocess.run(
        [str(ENVIRONMENT.directory / "bin" / "datahub"), "lite", "get", "--urn", mart],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(tmp_path), "DATAHUB_TELEMETRY_ENABLED": "false"},
        timeout=120,
        check=False,
    )
    assert got.returncode == 0, got.stderr[-2000:]
    entity = json.loads(got.stdout)
    assert entity["datasetProperties"]["qualifiedName"] == "lake.marts.mrt_glucose_weather_daily"
    upstreams = {u["dataset"] for u in entity["upstreamLineage"]["upstreams"]}
    assert upstreams == {
        urn("duckdb", "lake.silver.fct_daily_glucose_metrics"),
        urn("duckdb", "lake.silver.fct_daily_weather"),
    }


def test_syncing_again_changes_nothing(demo: dict[str, str]) -> None:
    def snapshot() -> list[tuple[Any, ...]]:
        con = sqlite3.connect(lite(demo))
        try:
            return con.execute(
                "select urn, aspect_name, version, metadata from metadata_aspect_v2 "
                "order by 1, 2, 3"
            ).fetchall()
        finally:
            con.close()

    before = snapshot()
    again = phlo("catalog", "sync", "--json", env=demo)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["removed"] == 0
    assert json.loads(again.stdout)["changed"] == 0  # DataHub's environment not even started
    assert snapshot() == before
    # Everything written again (`--full`): DataHub keeps what is the same as it was.
    full = json.loads(phlo("catalog", "sync", "--full", "--json", env=demo).stdout)
    assert full["changed"] == full["datasets"] + full["assertions"] + full["jobs"]
    assert snapshot() == before


def test_a_dataset_gone_from_the_projects_is_soft_deleted(demo: dict[str, str]) -> None:
    """A model the last sync wrote and the projects no longer have (renamed or removed)."""
    gone = urn("duckdb", "lake.marts.mrt_renamed_since")
    con = sqlite3.connect(lite(demo))
    with con:
        for aspect, metadata in (
            (
                "datasetProperties",
                {
                    "name": "mrt_renamed_since",
                    "qualifiedName": "lake.marts.mrt_renamed_since",
                    "customProperties": {"layer": "marts"},
                },
            ),
            ("status", {"removed": False}),
        ):
            for version in (0, 1):
                con.execute(
                    "insert into metadata_aspect_v2 values (?, ?, ?, ?, ?, ?)",
                    (gone, aspect, version, json.dumps(metadata), "{}", 0),
                )
    con.close()
    synced = Path(demo["PHLO_HOME"]) / "catalog" / "synced.json"
    record = json.loads(synced.read_text())
    record["written"][gone] = "written by an earlier sync"
    synced.write_text(json.dumps(record))
    assert phlo("catalog", "show", "mrt_renamed_since", env=demo).returncode == 0

    result = phlo("catalog", "sync", "--json", env=demo)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["removed"] == 1
    assert aspects(demo)[gone]["status"] == {"removed": True}
    assert phlo("catalog", "show", "mrt_renamed_since", env=demo).returncode == 1
    found = json.loads(phlo("catalog", "search", "renamed_since", "--json", env=demo).stdout)
    assert found == []
    assert gone not in json.loads(synced.read_text())["written"]


def test_a_failing_dbt_test_is_a_failed_assertion_after_the_next_run(
    demo: dict[str, str],
) -> None:
    """insights' `assert_some_days_have_weather` fails (a warning) when its place has no
    weather. The run itself updates the catalog (its `datahub_metadata` asset comes after the
    models: `mrt_glucose_weather_daily+` plans it once the home has a catalog), writing only
    what changed; passing again after a run that finds it."""
    check = "assert_some_days_have_weather"

    def latest() -> str:
        shown = json.loads(
            phlo("catalog", "show", "mrt_glucose_weather_daily", "--json", env=demo).stdout
        )
        return next(t["result"] for t in shown["tests"] if t["name"] == check)

    def changed(run: subprocess.CompletedProcess[str]) -> int:
        line = next(x for x in run.stdout.splitlines() if "datahub_metadata: catalog:" in x)
        return int(line.split("catalog: ")[1].split(" changed")[0])

    assert latest() == "SUCCESS"
    wrong = {**demo, "INSIGHTS_WEATHER_PLACE": "atlantis"}
    # Not publishing (the demo's PostgreSQL is a name only): the mart, then the catalog.
    selection = "mrt_glucose_weather_daily,datahub_metadata"
    ran = phlo("materialize", selection, env=wrong)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert f"failed check: mrt_glucose_weather_daily:{check}" in ran.stderr
    assert latest() == "FAILURE"
    # The mart's tests that ran (new results) and the insights job's last run, not the other
    # datasets and tests of the three projects.
    tests = {
        n["name"]
        for m in manifests(demo)
        for n in m["nodes"].values()
        if n["resource_type"] == "test"
        and any(up.endswith(".mrt_glucose_weather_daily") for up in n["depends_on"]["nodes"])
    }
    assert 1 <= changed(ran) <= len(tests) + 1
    assert phlo("materialize", selection, env=demo).returncode == 0
    assert latest() == "SUCCESS"
    again = phlo("catalog", "sync", "--json", env=demo)
    assert json.loads(again.stdout)["changed"] == 0


def test_the_token_and_passwords_stay_out_of_output(demo: dict[str, str]) -> None:
    """A GMS that does not answer: one line naming it, without the token or any password."""
    env = {**demo, "DATAHUB_GMS_URL": "http://127.0.0.1:9", "DATAHUB_TOKEN": TOKEN}
    result = phlo("catalog", "sync", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("phlo: error: writing to DataHub at http://127.0.0.1:9")
    for secret in (TOKEN, "never-shown-1234"):
        assert secret not in result.stdout + result.stderr


class _Gms(http.server.ThreadingHTTPServer):
    """The part of a DataHub GMS that DataHub's REST emitter talks to: `/config` (a GMS, not
    the frontend; no OpenAPI ingestion advertised, so the emitter uses Rest.li's batch
    ingestion) and `/aspects?action=ingestProposalBatch`, behind a bearer token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.proposals: list[dict[str, Any]] = []
        self.refused = 0
        super().__init__(("127.0.0.1", 0), _GmsHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _GmsHandler(http.server.BaseHTTPRequestHandler):
    @property
    def gms(self) -> _Gms:
        assert isinstance(self.server, _Gms)
        return self.server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        del format, args

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.gms.token}":
            return True
        self.gms.refused += 1
        self._answer(401, {"message": "Unauthorized"})
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self._authorized():
            return
        if self.path == "/config":
            versions = {"acryldata/datahub": {"version": "v1.3.0"}}
            self._answer(200, {"noCode": "true", "versions": versions})
        else:
            self._answer(404, {})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self._authorized():
            return
        if self.path == "/aspects?action=ingestProposalBatch":
            self.gms.proposals += body["proposals"]
            self._answer(200, {"value": []})
        else:
            self._answer(404, {})


def test_production_pushes_every_proposal_to_the_gms_with_its_token(
    demo: dict[str, str],
) -> None:
    """Covered: DataHub's own REST emitter, its transport (config check, bearer token, Rest.li
    batch ingestion) and payloads, against a local server speaking that protocol; a server
    named for the first time gets everything, then only what changes. Not covered
    (no GMS can run here): a real GMS's validation and storage, and OpenAPI ingestion."""
    gms = _Gms(TOKEN)
    threading.Thread(target=gms.serve_forever, daemon=True).start()
    try:
        env = {**demo, "DATAHUB_GMS_URL": gms.url, "DATAHUB_TOKEN": TOKEN}
        pushed = phlo("catalog", "sync", env=env)
        assert pushed.returncode == 0, pushed.stderr
        assert gms.url in pushed.stdout and TOKEN not in pushed.stdout + pushed.stderr
        received = {(p["entityUrn"], p["aspectName"]) for p in gms.proposals}
        stored = {(u, a) for u, aspects_of in aspects(demo).items() for a in aspects_of}
        # Everything Lite holds of this sync went to the server too (Lite also keeps the
        # soft-deleted dataset of an earlier test: its status went to the server then).
        assert received <= stored and len(received) >= len(stored) - 2
        lineage = next(
            json.loads(p["aspect"]["value"])
            for p in gms.proposals
            if p["aspectName"] == "upstreamLineage"
            and p["entityUrn"] == urn("duckdb", "lake.marts.mrt_glucose_weather_daily")
        )
        assert {u["dataset"] for u in lineage["upstreams"]} == {
            urn("duckdb", "lake.silver.fct_daily_glucose_metrics"),
            urn("duckdb", "lake.silver.fct_daily_weather"),
        }
        # The server has it all now: the next sync sends nothing (none of it changed).
        sent = len(gms.proposals)
        assert '"changed": 0' in phlo("catalog", "sync", "--json", env=env).stdout
        assert len(gms.proposals) == sent
        before = aspects(demo)
        wrong = {**env, "DATAHUB_TOKEN": "not-the-token"}
        refused = phlo("catalog", "sync", "--full", env=wrong)
        assert refused.returncode == 1 and gms.refused >= 1
        assert refused.stderr.startswith(f"phlo: error: writing to DataHub at {gms.url} failed")
        assert "not-the-token" not in refused.stderr
        assert aspects(demo) == before, "a refused push leaves the local catalog as it was"
    finally:
        gms.shutdown()
