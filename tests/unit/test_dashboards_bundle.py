"""The dashboards bundle (infra/superset) holds together and reads what the marts have: every
link by UUID resolves, every dataset is a mart some dbt project builds, every column a chart
uses is a documented column of that mart. And what phlo hands Superset carries the marts'
address, never a password in a file."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from phlo_core.services.dashboards import (
    BUNDLE_DIR,
    MASK,
    DashboardError,
    bundle_archive,
    database_target,
    read_bundle,
)
from phlo_core.workspace import DBT_ROOT

BUNDLE = read_bundle()


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {name: content for name, content in BUNDLE.items() if name.startswith(f"{kind}/")}


def mart_columns() -> dict[str, set[str]]:
    """Each mart's documented columns, from the dbt projects' YAML beside the models."""
    found: dict[str, set[str]] = {}
    for path in DBT_ROOT.glob("*/models/marts/*.yml"):
        for model in yaml.safe_load(path.read_text()).get("models", []):
            found[model["name"]] = {c["name"] for c in model.get("columns", [])}
    return found


def chart_columns(chart: dict[str, Any]) -> set[str]:
    params = chart["params"]
    used = {m["column"]["column_name"] for m in params.get("metrics", []) if m.get("column")}
    used |= set(params.get("all_columns", []))
    if params.get("x_axis"):
        used.add(params["x_axis"])
    query_context = json.loads(chart["query_context"])
    for query in query_context["queries"]:
        for column in query["columns"]:
            used.add(column["sqlExpression"] if isinstance(column, dict) else column)
    return used


def test_every_link_resolves() -> None:
    databases = {str(c["uuid"]) for c in of_kind("databases").values()}
    datasets = {str(c["uuid"]): c for c in of_kind("datasets").values()}
    charts = {str(c["uuid"]) for c in of_kind("charts").values()}
    assert len(databases) == 1, "one database: the published marts"
    assert all(str(d["database_uuid"]) in databases for d in datasets.values())
    assert all(str(c["dataset_uuid"]) in datasets for c in of_kind("charts").values())
    placed = set()
    for dashboard in of_kind("dashboards").values():
        for element in dashboard["position"].values():
            if isinstance(element, dict) and element.get("type") == "CHART":
                placed.add(element["meta"]["uuid"])
    assert placed == charts, "every chart is on a dashboard, every dashboard's chart exists"
    assert {d["slug"] for d in of_kind("dashboards").values()} == {"glucose", "glucose-and-weather"}


def test_every_chart_reads_columns_its_mart_documents() -> None:
    marts = mart_columns()
    datasets = {str(c["uuid"]): c for c in of_kind("datasets").values()}
    for dataset in datasets.values():
        assert dataset["schema"] == "marts" and dataset["table_name"] in marts, dataset
        documented = marts[dataset["table_name"]]
        assert {c["column_name"] for c in dataset["columns"]} == documented, dataset["table_name"]
    for name, chart in of_kind("charts").items():
        table = datasets[str(chart["dataset_uuid"])]["table_name"]
        missing = chart_columns(chart) - marts[table]
        assert not missing, f"{name} uses {missing}, not columns of {table}"
        assert chart["query_context"], f"{name}: its data endpoint needs a saved query"


def test_superset_gets_the_address_and_the_password_apart() -> None:
    url = "postgresql://phlo:s3cr%21t@127.0.0.1:6543/phlo_demo_analytics"
    uri, password = database_target(url)
    assert uri == f"postgresql+psycopg2://phlo:{MASK}@127.0.0.1:6543/phlo_demo_analytics"
    assert password == "s3cr!t"
    archive = zipfile.ZipFile(io.BytesIO(bundle_archive(BUNDLE, uri)))
    texts = {name: archive.read(name).decode() for name in archive.namelist()}
    assert all("s3cr" not in text for text in texts.values())
    database = next(yaml.safe_load(t) for n, t in texts.items() if "/databases/" in n)
    assert database["sqlalchemy_uri"] == uri
    assert len({name.split("/")[0] for name in texts}) == 1, "one folder at the top"
    for raw in BUNDLE_DIR.rglob("*.yaml"):
        assert ":XXXXXXXXXX@" in raw.read_text() or "sqlalchemy_uri" not in raw.read_text()


@pytest.mark.parametrize(
    "url",
    ["mysql://a:b@host/db", "postgresql://a:b@/db", "postgresql://a:b@host/", "not a url"],
)
def test_a_marts_url_superset_cannot_use_is_refused(url: str) -> None:
    with pytest.raises(DashboardError) as caught:
        database_target(url)
    assert ":b@" not in str(caught.value)


def test_a_folder_without_a_bundle_says_so(tmp_path: Path) -> None:
    with pytest.raises(DashboardError, match="no Superset bundle"):
        read_bundle(tmp_path)
