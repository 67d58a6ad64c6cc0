# pyright: reportMissingImports=false
# (DataHub is installed in its own environment, not in the one this checkout type-checks in.)
"""Run by DataHub's own environment (not phlo's): reads what changed in phlo's catalog since
the last sync (JSON, from `phlo_core.catalog.model`) and writes it as DataHub metadata through
DataHub's library: into DataHub Lite (a SQLite file), and, when DATAHUB_GMS_URL is set, to
that GMS with DataHub's REST emitter (DATAHUB_TOKEN, from the environment only). Datasets of
an earlier sync that are gone (`removed` urns) are soft-deleted, as DataHub does (Status
removed=true). Prints a JSON summary.

    <datahub venv>/bin/python datahub_driver.py CATALOG.json LITE.sqlite REMOVED.json
"""

# This file imports only the standard library and DataHub's: phlo's environment never imports it.
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from datahub.emitter import mce_builder as builder  # pants: no-infer-dep
from datahub.emitter.mcp import MetadataChangeProposalWrapper  # pants: no-infer-dep
from datahub.lite.sqlite_lite import SqliteLite  # pants: no-infer-dep
from datahub.lite.sqlite_lite_config import SqliteLiteConfig  # pants: no-infer-dep
from datahub.metadata import schema_classes as m  # pants: no-infer-dep

DOMAIN_PREFIX = "phlo."  # the layers as domains: urn:li:domain:phlo.silver


def _field_type(native: str) -> m.SchemaFieldDataTypeClass:
    t = native.lower()
    if any(k in t for k in ("int", "double", "float", "decimal", "numeric", "real")):
        kind: Any = m.NumberTypeClass()
    elif "bool" in t:
        kind = m.BooleanTypeClass()
    elif "timestamp" in t or "time" in t:
        kind = m.TimeTypeClass()
    elif "date" in t:
        kind = m.DateTypeClass()
    elif "[]" in t or "list" in t:
        kind = m.ArrayTypeClass()
    elif "struct" in t or "map" in t:
        kind = m.RecordTypeClass()
    else:
        kind = m.StringTypeClass()
    return m.SchemaFieldDataTypeClass(type=kind)


def _dataset(d: dict[str, Any]) -> list[Any]:
    urn = d["urn"]
    aspects: list[Any] = [
        m.StatusClass(removed=False),
        m.DatasetPropertiesClass(
            name=d["name"].split(".")[-1] if d["layer"] != "source" else d["name"],
            qualifiedName=d["name"],
            description=d["description"] or None,
            customProperties={
                "layer": d["layer"],
                "location": d["location"],
                "managed_by": "phlo",
                **d["properties"],
            },
        ),
        m.SubTypesClass(typeNames=[d["subtype"]]),
        m.DomainsClass(domains=[builder.make_domain_urn(DOMAIN_PREFIX + d["layer"])]),
        m.GlobalTagsClass(
            tags=[m.TagAssociationClass(tag=builder.make_tag_urn(t)) for t in d["tags"]]
        ),
        m.UpstreamLineageClass(
            upstreams=[
                m.UpstreamClass(dataset=up, type=m.DatasetLineageTypeClass.TRANSFORMED)
                for up in d["upstreams"]
            ]
        ),
    ]
    if d["columns"]:
        aspects.append(
            m.SchemaMetadataClass(
                schemaName=d["name"],
                platform=builder.make_data_platform_urn(d["platform"]),
                version=0,
                hash="",
                platformSchema=m.OtherSchemaClass(rawSchema=""),
                fields=[
                    m.SchemaFieldClass(
                        fieldPath=c["name"],
                        type=_field_type(c["type"]),
                        nativeDataType=c["type"] or "unknown",
                        description=c["description"] or None,
                    )
                    for c in d["columns"]
                ],
            )
        )
    if d["owners"]:
        aspects.append(
            m.OwnershipClass(
                owners=[
                    m.OwnerClass(
                        owner=o if o.startswith("urn:") else builder.make_user_urn(o),
                        type=m.OwnershipTypeClass.TECHNICAL_OWNER,
                    )
                    for o in d["owners"]
                ]
            )
        )
    return [MetadataChangeProposalWrapper(entityUrn=urn, aspect=a) for a in aspects]


def _assertion(a: dict[str, Any]) -> list[Any]:
    fields = [builder.make_schema_field_urn(a["dataset"], a["column"])] if a["column"] else []
    info = m.AssertionInfoClass(
        type=m.AssertionTypeClass.DATASET,
        description=a["description"] or f"dbt test {a['name']}",
        datasetAssertion=m.DatasetAssertionInfoClass(
            dataset=a["dataset"],
            scope=(
                m.DatasetAssertionScopeClass.DATASET_COLUMN
                if fields
                else m.DatasetAssertionScopeClass.DATASET_ROWS
            ),
            fields=fields or None,
            operator=m.AssertionStdOperatorClass._NATIVE_,
            nativeType=a["kind"],
        ),
        customProperties={"dbt_test": a["name"], "managed_by": "phlo"},
    )
    out: list[Any] = [
        MetadataChangeProposalWrapper(entityUrn=a["urn"], aspect=m.StatusClass(removed=False)),
        MetadataChangeProposalWrapper(entityUrn=a["urn"], aspect=info),
    ]
    if a["result"]:
        result = m.AssertionResultTypeClass.SUCCESS
        if a["result"] != "SUCCESS":
            result = m.AssertionResultTypeClass.FAILURE
        out.append(
            MetadataChangeProposalWrapper(
                entityUrn=a["urn"],
                aspect=m.AssertionRunEventClass(
                    timestampMillis=a["at_ms"],
                    runId=a["run_id"],
                    assertionUrn=a["urn"],
                    asserteeUrn=a["dataset"],
                    status=m.AssertionRunStatusClass.COMPLETE,
                    result=m.AssertionResultClass(type=result),
                ),
            )
        )
    return out


def _job(j: dict[str, Any], flows: set[str]) -> list[Any]:
    out: list[Any] = []
    if j["flow_urn"] not in flows:
        flows.add(j["flow_urn"])
        out.append(
            MetadataChangeProposalWrapper(
                entityUrn=j["flow_urn"],
                aspect=m.DataFlowInfoClass(
                    name=j["location"],
                    description=f"The {j['location']} code location (Dagster).",
                    customProperties={"managed_by": "phlo"},
                ),
            )
        )
    props = {"managed_by": "phlo", "location": j["location"]}
    if j["last_status"]:
        props |= {"last_run_status": j["last_status"], "last_run_id": j["last_run_id"]}
        props["last_run_end_ms"] = str(j["last_run_end_ms"])
    out += [
        MetadataChangeProposalWrapper(
            entityUrn=j["urn"],
            aspect=m.DataJobInfoClass(
                name=j["name"], type="DAGSTER", description=j["description"] or None,
                customProperties=props, flowUrn=j["flow_urn"],
            ),
        ),
        MetadataChangeProposalWrapper(
            entityUrn=j["urn"],
            aspect=m.DataJobInputOutputClass(
                inputDatasets=j["inputs"], outputDatasets=j["outputs"]
            ),
        ),
    ]  # fmt: skip
    return out


def proposals(catalog: dict[str, Any], removed: list[str]) -> list[Any]:
    out: list[Any] = []
    for platform, title in sorted(catalog["platforms"].items()):
        out.append(
            MetadataChangeProposalWrapper(
                entityUrn=builder.make_data_platform_urn(platform),
                aspect=m.DataPlatformInfoClass(
                    name=platform,
                    displayName=title,
                    type=m.PlatformTypeClass.OTHERS,
                    datasetNameDelimiter="/",
                ),
            )
        )
    for layer, description in sorted(catalog["domains"].items()):
        out.append(
            MetadataChangeProposalWrapper(
                entityUrn=builder.make_domain_urn(DOMAIN_PREFIX + layer),
                aspect=m.DomainPropertiesClass(name=layer, description=description),
            )
        )
    for d in catalog["datasets"]:
        out += _dataset(d)
    for a in catalog["assertions"]:
        out += _assertion(a)
    flows: set[str] = set()
    for j in catalog["jobs"]:
        out += _job(j, flows)
    for urn in removed:
        out.append(MetadataChangeProposalWrapper(entityUrn=urn, aspect=m.StatusClass(removed=True)))
    return out


def main() -> int:
    catalog_file, lite_file, removed_file = sys.argv[1:4]
    with open(catalog_file) as f:
        catalog = json.load(f)
    with open(removed_file) as f:
        removed = json.load(f)
    started = time.monotonic()
    mcps = proposals(catalog, removed)
    summary: dict[str, Any] = {"proposals": len(mcps)}
    # The server first: when it refuses, the local catalog stays as the last sync left it.
    gms = os.environ.get("DATAHUB_GMS_URL")
    if gms:
        # Only then: it takes a third of a second to import.
        from datahub.emitter.rest_emitter import DatahubRestEmitter  # pants: no-infer-dep

        emitter = DatahubRestEmitter(
            gms_server=gms,
            token=os.environ.get("DATAHUB_TOKEN") or None,
            connect_timeout_sec=10,
            read_timeout_sec=60,
            retry_max_times=2,
        )
        try:
            emitter.emit_mcps(mcps)
        finally:
            emitter.close()
        summary["gms_seconds"] = time.monotonic() - started
        started = time.monotonic()
    # DataHub Lite's SQLite store itself (what `get_datahub_lite` makes for type sqlite, without
    # the registries it imports: 0.4 s of a sync's start).
    lite = SqliteLite(SqliteLiteConfig(file=lite_file))
    try:
        for mcp in mcps:
            lite.write(mcp)
    finally:
        lite.close()
    summary["lite_seconds"] = time.monotonic() - started
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # one line for phlo to show; never the token (not in messages)
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"{type(exc).__name__}: {first}", file=sys.stderr)
        sys.exit(1)
