"""The catalog read back from DataHub Lite, as `phlo catalog search|show|lineage` show it.

Lite keeps every aspect in one SQLite table (`metadata_aspect_v2`: urn, aspect name, version,
JSON; version 0 is the latest), the layout of DataHub's own aspect store. Reading it needs no
DataHub import (which takes longer than the answer): sqlite3, read-only, parameters only."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phlo_core.catalog.model import LAKE_PLATFORM
from phlo_core.catalog.sync import lite_file
from phlo_core.settings import PhloSettings


class CatalogNotFoundError(LookupError):
    """No catalog yet, or no dataset of that name: the message says which and what to do."""


@dataclass
class Test:
    name: str
    kind: str
    column: str
    result: str  # SUCCESS, FAILURE or "" (never ran)
    run_id: str


@dataclass
class DatasetView:
    urn: str
    name: str
    platform: str
    layer: str
    location: str
    description: str
    subtype: str
    columns: list[dict[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)  # names
    downstream: list[str] = field(default_factory=list)
    tests: list[Test] = field(default_factory=list)


@dataclass
class _Store:
    aspects: dict[str, dict[str, Any]]  # urn -> aspect name -> JSON

    def datasets(self) -> dict[str, dict[str, Any]]:
        return {
            urn: a
            for urn, a in self.aspects.items()
            if urn.startswith("urn:li:dataset:") and not a.get("status", {}).get("removed")
        }


@contextmanager
def _open(settings: PhloSettings) -> Iterator[_Store]:
    path = lite_file(settings)
    if not path.exists():
        raise CatalogNotFoundError(
            f"no catalog in {path.parent} yet: `phlo catalog sync` writes it"
        )
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "select urn, aspect_name, metadata from metadata_aspect_v2 where version = 0"
        ).fetchall()
    finally:
        con.close()
    aspects: dict[str, dict[str, Any]] = {}
    for urn, aspect, metadata in rows:
        aspects.setdefault(urn, {})[aspect] = json.loads(metadata)
    yield _Store(aspects)


def _name(aspects: dict[str, Any], urn: str) -> str:
    props = aspects.get("datasetProperties") or {}
    return props.get("qualifiedName") or urn


def _platform(urn: str) -> str:
    return urn.split("urn:li:dataPlatform:", 1)[1].split(",", 1)[0]


def resolve(store: _Store, wanted: str) -> str:
    """The urn of the dataset `wanted` names: an urn, a qualified name (`lake.marts.x`,
    `marts.x`) or a table's name; the lakehouse's first where the published copy shares it."""
    datasets = store.datasets()
    if wanted in datasets:
        return wanted
    text = wanted.lower()
    matches = [
        urn
        for urn, a in datasets.items()
        if (n := _name(a, urn).lower()) == text or n.endswith("." + text)
    ]
    if len(matches) > 1:
        lake = [u for u in matches if _platform(u) == LAKE_PLATFORM]
        matches = lake if len(lake) == 1 else matches
    if not matches:
        raise CatalogNotFoundError(
            f"no dataset named {wanted!r} in the catalog (`phlo catalog search` finds names)"
        )
    if len(matches) > 1:
        names = ", ".join(sorted(_name(datasets[u], u) for u in matches))
        raise CatalogNotFoundError(f"{wanted!r} names several datasets: {names}")
    return matches[0]


def _downstream(store: _Store) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for urn, a in store.datasets().items():
        for up in (a.get("upstreamLineage") or {}).get("upstreams", []):
            found.setdefault(up["dataset"], []).append(urn)
    return found


def _upstream(store: _Store, urn: str) -> list[str]:
    aspects = store.datasets().get(urn, {})
    return [u["dataset"] for u in (aspects.get("upstreamLineage") or {}).get("upstreams", [])]


def search(settings: PhloSettings, text: str) -> list[DatasetView]:
    """Datasets whose name, description, tags or columns (names, descriptions) hold `text`."""
    wanted = text.lower()
    with _open(settings) as store:
        found = []
        for urn, a in store.datasets().items():
            haystack = json.dumps(
                [a.get("datasetProperties"), a.get("schemaMetadata"), a.get("globalTags"), urn]
            ).lower()
            if wanted in haystack:
                found.append(_view(store, urn, with_tests=False))
    return sorted(found, key=lambda d: (d.layer != "source", d.name))


def show(settings: PhloSettings, dataset: str) -> DatasetView:
    with _open(settings) as store:
        return _view(store, resolve(store, dataset), with_tests=True)


def _view(store: _Store, urn: str, *, with_tests: bool) -> DatasetView:
    a = store.aspects[urn]
    props = a.get("datasetProperties") or {}
    custom = props.get("customProperties") or {}
    names = {u: _name(store.aspects.get(u, {}), u) for u in store.aspects}
    view = DatasetView(
        urn=urn,
        name=_name(a, urn),
        platform=_platform(urn),
        layer=custom.get("layer", ""),
        location=custom.get("location", ""),
        description=props.get("description") or "",
        subtype=((a.get("subTypes") or {}).get("typeNames") or [""])[0],
        columns=[
            {
                "name": f["fieldPath"],
                "type": f.get("nativeDataType", ""),
                "description": f.get("description") or "",
            }
            for f in (a.get("schemaMetadata") or {}).get("fields", [])
        ],
        tags=[
            t["tag"].removeprefix("urn:li:tag:")
            for t in (a.get("globalTags") or {}).get("tags", [])
        ],
        owners=[o["owner"] for o in (a.get("ownership") or {}).get("owners", [])],
        upstream=sorted(names.get(u, u) for u in _upstream(store, urn)),
        downstream=sorted(names.get(u, u) for u in _downstream(store).get(urn, [])),
    )
    if with_tests:
        for assertion, aspects in store.aspects.items():
            info = aspects.get("assertionInfo") or {}
            if (aspects.get("status") or {}).get("removed"):
                continue
            if (info.get("datasetAssertion") or {}).get("dataset") != urn:
                continue
            run = aspects.get("assertionRunEvent") or {}
            fields = (info.get("datasetAssertion") or {}).get("fields") or []
            view.tests.append(
                Test(
                    name=(info.get("customProperties") or {}).get("dbt_test", assertion),
                    kind=(info.get("datasetAssertion") or {}).get("nativeType", ""),
                    column=fields[0].rsplit(",", 1)[-1].rstrip(")") if fields else "",
                    result=(run.get("result") or {}).get("type", ""),
                    run_id=run.get("runId", ""),
                )
            )
        view.tests.sort(key=lambda t: (t.column, t.name))
    return view


@dataclass
class LineageNode:
    name: str
    layer: str
    platform: str
    children: list[LineageNode] = field(default_factory=list)


def lineage(settings: PhloSettings, dataset: str, *, upstream: bool, depth: int) -> LineageNode:
    """The dataset and what it reads from (upstream) or feeds (downstream), `depth` levels."""
    with _open(settings) as store:
        root = resolve(store, dataset)
        downstream = _downstream(store)

        def node(urn: str, left: int, path: tuple[str, ...]) -> LineageNode:
            a = store.aspects.get(urn, {})
            custom = (a.get("datasetProperties") or {}).get("customProperties") or {}
            made = LineageNode(_name(a, urn), custom.get("layer", ""), _platform(urn))
            if left > 0 and urn not in path:
                nexts = _upstream(store, urn) if upstream else downstream.get(urn, [])
                made.children = sorted(
                    (node(u, left - 1, (*path, urn)) for u in nexts), key=lambda n: n.name
                )
            return made

        return node(root, depth, ())


def lite_path(settings: PhloSettings) -> Path:
    return lite_file(settings)
