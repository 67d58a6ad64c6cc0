"""The catalog built from manifests: datasets named by relation (a source another project's
model writes is that model), source APIs and published copies at the ends of the lineage,
column types from the lakehouse with dbt's descriptions, tests with their latest result."""

from __future__ import annotations

from typing import Any

from phlo_core.catalog.model import build_catalog, dataset_urn


def model(name: str, schema: str, parents: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "unique_id": f"model.p.{name}",
        "resource_type": "model",
        "name": name,
        "database": "lake",
        "schema": schema,
        "alias": name,
        "depends_on": {"nodes": parents},
        "config": {"materialized": "table"},
        "columns": extra.pop("columns", {}),
        "description": extra.pop("description", ""),
        **extra,
    }


def source(name: str, schema: str, **meta: Any) -> dict[str, Any]:
    return {
        "unique_id": f"source.p.{schema}.{name}",
        "resource_type": "source",
        "name": name,
        "identifier": name,
        "database": "lake",
        "schema": schema,
        "meta": meta,
        "columns": {},
    }


DOMAIN = {
    "nodes": {
        "model.p.stg_orders": model("stg_orders", "bronze", ["source.p.raw.orders"]),
        "model.p.fct_orders": model(
            "fct_orders",
            "silver",
            ["model.p.stg_orders"],
            columns={"order_id": {"description": "The order.  "}, "total": {"description": ""}},
            tags=["sales"],
            meta={"owner": "data-team"},
        ),
        "model.p.mrt_orders": model("mrt_orders", "marts", ["model.p.fct_orders"]),
        "test.p.unique_fct_orders_order_id": {
            "unique_id": "test.p.unique_fct_orders_order_id",
            "resource_type": "test",
            "name": "unique_fct_orders_order_id",
            "attached_node": "model.p.fct_orders",
            "column_name": "order_id",
            "test_metadata": {"name": "unique"},
            "depends_on": {"nodes": ["model.p.fct_orders"]},
        },
    },
    "sources": {
        "source.p.raw.orders": source(
            "orders",
            "raw",
            dagster={"asset_key": ["dlt_orders"]},
            source_api={"platform": "shop", "platform_name": "Shop", "name": "v2/orders"},
        )
    },
}
JOINING = {
    "nodes": {
        "model.j.mrt_joined": model("mrt_joined", "marts", ["source.j.silver.fct_orders"]),
    },
    "sources": {"source.j.silver.fct_orders": source("fct_orders", "silver")},
}


def lake(name: str) -> str:
    return dataset_urn("duckdb", f"lake.{name}")


def test_lineage_runs_from_the_api_to_the_published_copy_across_projects() -> None:
    catalog = build_catalog({"shop": DOMAIN, "joins": JOINING}, published_database="analytics")
    assert catalog.edges() == {
        (dataset_urn("shop", "v2/orders"), lake("raw.orders")),
        (lake("raw.orders"), lake("bronze.stg_orders")),
        (lake("bronze.stg_orders"), lake("silver.fct_orders")),
        (lake("silver.fct_orders"), lake("marts.mrt_orders")),
        (lake("silver.fct_orders"), lake("marts.mrt_joined")),  # the source is the model
        (lake("marts.mrt_orders"), dataset_urn("postgres", "analytics.marts.mrt_orders")),
        (lake("marts.mrt_joined"), dataset_urn("postgres", "analytics.marts.mrt_joined")),
    }
    by_urn = {d.urn: d for d in catalog.datasets}
    assert by_urn[lake("silver.fct_orders")].location == "shop"  # the writer, not the reader
    assert by_urn[lake("raw.orders")].properties == {"written_by": "dlt_orders"}
    assert by_urn[dataset_urn("shop", "v2/orders")].layer == "source"
    assert catalog.platforms == {"shop": "Shop"}


def test_unpublished_marts_have_no_copy() -> None:
    catalog = build_catalog({"shop": DOMAIN})
    assert not [d for d in catalog.datasets if d.platform == "postgres"]


def test_columns_take_the_lakehouse_types_and_the_dbt_descriptions() -> None:
    types = {"lake.silver.fct_orders": {"order_id": "BIGINT", "total": "DOUBLE", "extra": "DATE"}}
    catalog = build_catalog({"shop": DOMAIN}, types=types)
    fct = next(d for d in catalog.datasets if d.name == "lake.silver.fct_orders")
    assert [(c.name, c.type, c.description) for c in fct.columns] == [
        ("order_id", "BIGINT", "The order."),
        ("total", "DOUBLE", ""),
        ("extra", "DATE", ""),  # in the table, not documented
    ]
    assert fct.tags == ["sales"] and fct.owners == ["data-team"]


def test_tests_carry_their_latest_result() -> None:
    results = {("fct_orders", "unique_fct_orders_order_id"): ("FAILURE", "run-1", 1700000000000)}
    catalog = build_catalog({"shop": DOMAIN}, check_results=results)
    [test] = catalog.assertions
    assert test.dataset == lake("silver.fct_orders")
    assert (test.column, test.kind) == ("order_id", "unique")
    assert (test.result, test.run_id, test.at_ms) == ("FAILURE", "run-1", 1700000000000)
    assert build_catalog({"shop": DOMAIN}).assertions[0].result == ""  # never ran
