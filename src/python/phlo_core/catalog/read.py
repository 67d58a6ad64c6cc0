"""The catalog read back from DataHub Lite, as `phlo catalog search|show|lineage` show it.

Lite keeps every aspect in one SQLite table (`metadata_aspect_v2`: urn, aspect name, version,
JSON; version 0 is the latest), the layout of DataHub's own aspect store. Reading it needs no
DataHub import (which takes longer than the answer): sqlite3, read-only, parameters only."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
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


class _Store:
    """Lite's latest aspects, urn -> aspect name -> JSON, with the lineage both ways."""

    def __init__(self, aspects: dict[str, dict[str, Any]]) -> None:
        self.aspects = aspects
        self.datasets = {
            urn: a
            for urn, a in aspects.items()
            if urn.startswith("urn:li:dataset:") and not a.get("status", {}).get("removed")
        }
        self.downstream: dict[str, list[str]] = {}
        for urn in self.datasets:
            for up in self.upstream(urn):
                self.downstream.setdefault(up, []).append(urn)

    def upstream(self, urn: str) -> list[str]:
        lineage = self.datasets.get(urn, {}).get("upstreamLineage") or {}
        return [u["dataset"] for u in lineage.get("upstreams", [])]

    def name(self, urn: str) -> str:
        props = self.aspects.get(urn, {}).get("datasetProperties") or {}
        return props.get("qualifiedName") or urn


def _load(settings: PhloSettings) -> _Store:
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
    return _Store(aspects)


def _platform(urn: str) -> str:
    return urn.split("urn:li:dataPlatform:", 1)[1].split(",", 1)[0]


def resolve(store: _Store, wanted: str) -> str:
    """The urn of the dataset `wanted` names: an urn, a qualified name (`lake.marts.x`,
    `marts.x`) or a table's name; the lakehouse's first where the published copy shares it."""
    datasets = store.datasets
    if wanted in datasets:
        return wanted
    text = wanted.lower()
    matches = [
        urn for urn in datasets if (n := store.name(urn).lower()) == text or n.endswith("." + text)
    ]
    if len(matches) > 1:
        lake = [u for u in matches if _platform(u) == LAKE_PLATFORM]
        matches = lake if len(lake) == 1 else matches
    if not matches:
        raise CatalogNotFoundError(
            f"no dataset named {wanted!r} in the catalog (`phlo catalog search` finds names)"
        )
    if len(matches) > 1:
        names = ", ".join(sorted(store.name(u) for u in matches))
        raise CatalogNotFoundError(f"{wanted!r} names several datasets: {names}")
    return matches[0]


def search(settings: PhloSettings, text: str) -> list[DatasetView]:
    """Datasets whose name, description, tags or columns (names, descriptions) hold `text`."""
    wanted = text.lower()
    store = _load(settings)
    found = []
    for urn, a in store.datasets.items():
        haystack = json.dumps(
            [a.get("datasetProperties"), a.get("schemaMetadata"), a.get("globalTags"), urn]
        ).lower()
        if wanted in haystack:
            found.append(_view(store, urn, with_tests=False))
    return sorted(found, key=lambda d: (d.layer != "source", d.name))


def show(settings: PhloSettings, dataset: str) -> DatasetView:
    store = _load(settings)
    return _view(store, resolve(store, dataset), with_tests=True)


def _view(store: _Store, urn: str, *, with_tests: bool) -> DatasetView:
    a = store.aspects[urn]
    props = a.get("datasetProperties") or {}
    custom = props.get("customProperties") or {}
    view = DatasetView(
        urn=urn,
        name=store.name(urn),
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
        upstream=sorted(map(store.name, store.upstream(urn))),
        downstream=sorted(map(store.name, store.downstream.get(urn, []))),
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
    store = _load(settings)

    def node(urn: str, left: int, path: tuple[str, ...]) -> LineageNode:
        a = store.aspects.get(urn, {})
        custom = (a.get("datasetProperties") or {}).get("customProperties") or {}
        made = LineageNode(store.name(urn), custom.get("layer", ""), _platform(urn))
        if left > 0 and urn not in path:
            nexts = store.upstream(urn) if upstream else store.downstream.get(urn, [])
            made.children = sorted(
                (node(u, left - 1, (*path, urn)) for u in nexts), key=lambda n: n.name
            )
        return made

    return node(resolve(store, dataset), depth, ())
