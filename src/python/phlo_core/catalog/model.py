"""What the metadata catalog holds, built from what phlo already knows: each dbt project's
manifest (models, sources, columns and their descriptions, tags, owners, tests, edges), the
lakehouse's column types, the asset index (which location writes which table), Dagster's
instance (each test's latest result, each job's latest run) and the publishing settings.

Datasets are named by the relation they are (`lake.silver.fct_orders`), so a
project reading another's model through a dbt source (one joining two domains) points at
that model's dataset, not at a name of its own. Lineage runs source API -> ingestion table ->
bronze -> silver -> gold -> marts -> the marts published to PostgreSQL. The result is plain data
(JSON-ready): DataHub's own library turns it into metadata in DataHub's environment
(`phlo_core.catalog.sync`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from phlo_core.settings import PhloSettings

LAKE_PLATFORM = "duckdb"  # DuckLake's tables, read through DuckDB
PUBLISHED_PLATFORM = "postgres"
ENV = "PROD"
MARTS_SCHEMA = "marts"
LAYERS = {
    "source": "What a location fetches from outside: an API, before phlo validates it.",
    "raw": "Data as ingested and validated by a location (Pandera), one local day at a time.",
    "bronze": "Typed, renamed and deduplicated views of the raw tables.",
    "silver": "Facts at their grain: readings, days, places.",
    "gold": "Metrics and aggregates built on the facts.",
    "marts": "What people and dashboards read: one question per table.",
    "published": "The marts as published to PostgreSQL (PHLO_PUBLISH_POSTGRES_URL).",
}


def dataset_urn(platform: str, name: str) -> str:
    return f"urn:li:dataset:(urn:li:dataPlatform:{platform},{name},{ENV})"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str


@dataclass
class Dataset:
    urn: str
    platform: str
    name: str  # e.g. lake.silver.fct_orders
    layer: str  # a key of LAYERS
    location: str  # the code location that writes it ("" when none does)
    description: str = ""
    subtype: str = "Table"
    columns: list[Column] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    upstreams: list[str] = field(default_factory=list)  # urns, sorted
    properties: dict[str, str] = field(default_factory=dict)


@dataclass
class Assertion:
    urn: str
    name: str  # the dbt test's name (its Dagster asset check's too)
    dataset: str  # urn
    column: str  # "" for a test of the whole table
    kind: str  # not_null, unique, accepted_values, ... or the singular test's name
    description: str
    result: str  # SUCCESS, FAILURE, or "" when it never ran
    run_id: str = ""
    at_ms: int = 0


@dataclass
class Job:
    urn: str
    flow_urn: str
    location: str
    name: str
    description: str
    outputs: list[str] = field(default_factory=list)  # dataset urns
    inputs: list[str] = field(default_factory=list)
    last_status: str = ""  # Dagster's run status, "" when it never ran
    last_run_id: str = ""
    last_run_end_ms: int = 0


@dataclass
class Catalog:
    datasets: list[Dataset] = field(default_factory=list)
    assertions: list[Assertion] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    platforms: dict[str, str] = field(default_factory=dict)  # custom platform -> display name

    def edges(self) -> set[tuple[str, str]]:
        """(upstream urn, downstream urn) of every lineage edge."""
        return {(up, d.urn) for d in self.datasets for up in d.upstreams}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _relation(node: Mapping[str, Any]) -> str:
    name = node.get("identifier") or node.get("alias") or node["name"]
    return f"{node['database']}.{node['schema']}.{name}".lower()


def _layer(schema: str) -> str:
    return schema if schema in LAYERS else "silver"


def _columns(node: Mapping[str, Any], types: Mapping[str, Mapping[str, str]]) -> list[Column]:
    """The node's documented columns in the table's order, then the table's other columns;
    types from the lakehouse where it has the table (else dbt's data_type, else "")."""
    known = types.get(_relation(node), {})
    documented = {name.lower(): c for name, c in (node.get("columns") or {}).items()}
    names = list(known) + [n for n in documented if n not in known]
    return [
        Column(
            name=name,
            type=known.get(name) or (documented.get(name) or {}).get("data_type") or "",
            description=((documented.get(name) or {}).get("description") or "").strip(),
        )
        for name in names
    ]


def _owners(node: Mapping[str, Any]) -> list[str]:
    meta = node.get("meta") or node.get("config", {}).get("meta") or {}
    owner = meta.get("owner") or meta.get("owners") or []
    return sorted([owner] if isinstance(owner, str) else [str(o) for o in owner])


def _lake_dataset(
    node: Mapping[str, Any],
    location: str,
    types: Mapping[str, Mapping[str, str]],
    **extra: Any,
) -> Dataset:
    """The lakehouse table a dbt model or source is."""
    relation = _relation(node)
    return Dataset(
        urn=dataset_urn(LAKE_PLATFORM, relation),
        platform=LAKE_PLATFORM,
        name=relation,
        layer=_layer(node["schema"]),
        location=location,
        description=(node.get("description") or "").strip(),
        columns=_columns(node, types),
        tags=sorted(node.get("tags") or []),
        owners=_owners(node),
        **extra,
    )


def tested_node(test: Mapping[str, Any], nodes: Mapping[str, Any]) -> str | None:
    """The unique id of the node (of `nodes`) a dbt test checks, as dagster-dbt attaches its
    asset check: the test's attached node, else its only parent among `nodes`."""
    parents = [n for n in test["depends_on"]["nodes"] if n in nodes]
    attached = test.get("attached_node") or (parents[0] if len(parents) == 1 else None)
    return attached if attached in nodes else None


def _test_kind(node: Mapping[str, Any]) -> str:
    metadata = node.get("test_metadata") or {}
    return str(metadata.get("name") or "singular")


def build_catalog(
    manifests: Mapping[str, Mapping[str, Any]],
    *,
    types: Mapping[str, Mapping[str, str]] | None = None,
    published_database: str | None = None,
    check_results: Mapping[tuple[str, str], tuple[str, str, int]] | None = None,
    jobs: Iterable[Job] = (),
) -> Catalog:
    """The catalog of the projects' `manifests` (location name -> manifest).

    `types`: relation -> {column: type} from the lakehouse. `published_database`: the
    PostgreSQL database the marts are published to (None: not published). `check_results`:
    (asset name, check name) -> (SUCCESS | FAILURE, run id, epoch ms)."""
    types = types or {}
    check_results = check_results or {}
    catalog = Catalog(jobs=list(jobs))
    datasets: dict[str, Dataset] = {}
    written: dict[str, str] = {}  # relation -> the location whose model writes it

    for location, manifest in manifests.items():
        for node in manifest["nodes"].values():
            if node["resource_type"] == "model":
                written[_relation(node)] = location

    # Sources first: a source another project's model writes becomes that model's dataset.
    for location, manifest in manifests.items():
        for source in manifest.get("sources", {}).values():
            relation = _relation(source)
            if relation in written:
                continue
            meta = source.get("meta") or {}
            ingested_by = (meta.get("dagster") or {}).get("asset_key") or []
            dataset = datasets.setdefault(
                dataset_urn(LAKE_PLATFORM, relation),
                _lake_dataset(
                    source,
                    location,
                    types,
                    properties={"written_by": "/".join(ingested_by)} if ingested_by else {},
                ),
            )
            apis = meta.get("source_api") or []
            for api in [apis] if isinstance(apis, dict) else apis:
                api_urn = dataset_urn(api["platform"], api["name"])
                catalog.platforms[api["platform"]] = api.get("platform_name", api["platform"])
                datasets.setdefault(
                    api_urn,
                    Dataset(
                        urn=api_urn,
                        platform=api["platform"],
                        name=api["name"],
                        layer="source",
                        location=location,
                        description=(api.get("description") or "").strip(),
                        subtype="API",
                    ),
                )
                dataset.upstreams = sorted({*dataset.upstreams, api_urn})

    for location, manifest in manifests.items():
        nodes = manifest["nodes"]
        sources = manifest.get("sources", {})

        def urn_of(unique_id: str) -> str | None:
            node = nodes.get(unique_id) or sources.get(unique_id)  # noqa: B023 (used at once)
            if node is None or node["resource_type"] not in ("model", "source"):
                return None
            return dataset_urn(LAKE_PLATFORM, _relation(node))

        for node in nodes.values():
            if node["resource_type"] != "model":
                continue
            upstreams = {u for u in map(urn_of, node["depends_on"]["nodes"]) if u}
            materialized = node["config"].get("materialized", "")
            model = _lake_dataset(
                node,
                location,
                types,
                subtype="View" if materialized == "view" else "Table",
                upstreams=sorted(upstreams),
                properties={"dbt_unique_id": node["unique_id"], "materialized": materialized},
            )
            urn = model.urn
            datasets[urn] = model
            if published_database and node["schema"] == MARTS_SCHEMA:
                name = f"{published_database}.{MARTS_SCHEMA}.{node['name']}".lower()
                published = dataset_urn(PUBLISHED_PLATFORM, name)
                datasets[published] = Dataset(
                    urn=published,
                    platform=PUBLISHED_PLATFORM,
                    name=name,
                    layer="published",
                    location=location,
                    description=(node.get("description") or "").strip(),
                    columns=datasets[urn].columns,
                    upstreams=[urn],
                    properties={"written_by": f"{location}_published_marts"},
                )

        for test in nodes.values():
            if test["resource_type"] != "test":
                continue
            attached = tested_node(test, nodes)
            target = urn_of(attached) if attached else None
            if attached is None or target is None:
                continue
            key = (nodes[attached]["name"], test["name"])
            result, run_id, at_ms = check_results.get(key, ("", "", 0))
            catalog.assertions.append(
                Assertion(
                    urn=f"urn:li:assertion:phlo.{test['unique_id']}",
                    name=test["name"],
                    dataset=target,
                    column=(test.get("column_name") or "").lower(),
                    kind=_test_kind(test),
                    description=(test.get("description") or "").strip(),
                    result=result,
                    run_id=run_id,
                    at_ms=at_ms,
                )
            )

    catalog.datasets = sorted(datasets.values(), key=lambda d: d.urn)
    catalog.assertions.sort(key=lambda a: a.urn)
    return catalog


def published_database(settings: PhloSettings) -> str | None:
    """The database name of PHLO_PUBLISH_POSTGRES_URL (never its credentials)."""
    url = settings.phlo_publish_postgres_url
    if url is None:
        return None
    return urlsplit(url.get_secret_value()).path.lstrip("/") or "postgres"
