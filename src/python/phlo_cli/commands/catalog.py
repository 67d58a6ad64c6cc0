"""`phlo catalog`: the metadata catalog in DataHub (sync it, search it, show a dataset, draw
its lineage)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from cyclopts import App, Parameter

from phlo_cli.common import (
    EXIT_FAILED,
    UsageError,
    command_settings,
    err,
    shown,
    terminal_width,
)

if TYPE_CHECKING:  # for annotations only: these modules load inside the commands
    from phlo_core.catalog.read import LineageNode

catalog_app = App(
    name="catalog",
    help="The metadata catalog (DataHub): every dataset, column, test and lineage edge.",
)


@catalog_app.command(name="sync")
def catalog_sync(
    *,
    full: bool = False,
    as_json: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """Write every location's datasets (schemas, descriptions, tags, owners, layer), dbt tests
    with their latest results, lineage from the source APIs to the published marts, and the
    Dagster jobs with their latest run, into DataHub Lite under PHLO_HOME/catalog (and to
    DATAHUB_GMS_URL when set). Only what changed since the last sync is written; what is gone
    since is soft-deleted. Once a home has a catalog, every run that builds models keeps it
    current (the `datahub_metadata` asset). The first sync installs DataHub's library into an
    environment of its own (~/.cache/phlo; a few seconds to a minute, shown as it goes).

    Parameters
    ----------
    full
        Write everything again, changed or not (after the catalog was edited by hand, say).
    as_json
        The counts as one JSON object.
    """
    from phlo_core.catalog.sync import CatalogError, sync
    from phlo_core.dbt.runner import DbtError
    from phlo_core.runs.instance import InstanceError

    settings = command_settings()

    def progress(line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)

    try:
        result = sync(settings, progress, full=full)
    except (CatalogError, DbtError, InstanceError) as exc:
        err(str(exc))
        return EXIT_FAILED
    if as_json:
        print(json.dumps(asdict(result)))
        return 0
    where = f"DataHub Lite ({shown(Path(result.lite))})"
    if result.gms:
        where += f" and {result.gms}"
    written = f"{result.changed} changed" if result.changed else "nothing changed"
    print(
        f"{result.datasets} datasets, {result.edges} lineage edges, {result.assertions} tests, "
        f"{result.jobs} jobs in {where} ({written}) in {result.seconds:.1f}s"
        + (f"; {result.removed} gone since the last sync, soft-deleted" if result.removed else "")
    )
    return 0


@catalog_app.command(name="search")
def catalog_search(
    text: str, /, *, as_json: Annotated[bool, Parameter(name="--json")] = False
) -> int:
    """Datasets whose name, description, tags or columns hold TEXT (case-insensitive).

    Parameters
    ----------
    text
        What to look for.
    as_json
        A JSON list of {name, platform, layer, location, description}.
    """
    from phlo_cli.render import to_table
    from phlo_core.catalog.read import CatalogNotFoundError, search

    if not text.strip():
        raise UsageError("TEXT is empty")
    try:
        found = search(command_settings(writes=False), text)
    except CatalogNotFoundError as exc:
        err(str(exc))
        return EXIT_FAILED
    rows = [(d.name, d.platform, d.layer, d.location, d.description.split("\n")[0]) for d in found]
    columns = ["name", "platform", "layer", "location", "description"]
    if as_json:
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows]))
    else:
        print(to_table(columns, rows, terminal_width()))
    return 0


@catalog_app.command(name="show")
def catalog_show(
    dataset: str, /, *, as_json: Annotated[bool, Parameter(name="--json")] = False
) -> int:
    """A dataset: description, columns (type, description), upstream and downstream datasets,
    and its tests with their latest result.

    Parameters
    ----------
    dataset
        A table's name (`mrt_orders`), a qualified one (`marts.mrt_orders`,
        `phlo_analytics.marts.mrt_orders` for the published copy) or a DataHub urn.
    as_json
        One JSON object.
    """
    from phlo_cli.render import to_table
    from phlo_core.catalog.read import CatalogNotFoundError, show

    try:
        view = show(command_settings(writes=False), dataset)
    except CatalogNotFoundError as exc:
        err(str(exc))
        return EXIT_FAILED
    if as_json:
        print(json.dumps(asdict(view)))
        return 0
    print(f"{view.name}  ({view.platform}, {view.layer}, location {view.location or '-'})")
    print(f"urn: {view.urn}")
    if view.description:
        print(f"\n{view.description}")
    if view.tags or view.owners:
        print(f"\ntags: {', '.join(view.tags) or '-'}; owners: {', '.join(view.owners) or '-'}")
    if view.columns:
        print()
        rows = [(c["name"], c["type"], c["description"]) for c in view.columns]
        print(to_table(["column", "type", "description"], rows, terminal_width()))
    print(f"\nupstream: {', '.join(view.upstream) or '-'}")
    print(f"downstream: {', '.join(view.downstream) or '-'}")
    if view.tests:
        print()
        rows = [(t.name, t.kind, t.column or "-", t.result or "never run") for t in view.tests]
        print(to_table(["test", "kind", "column", "latest result"], rows, terminal_width()))
    return 0


@catalog_app.command(name="lineage")
def catalog_lineage(
    dataset: str,
    /,
    *,
    upstream: bool = False,
    downstream: bool = False,
    depth: int = 10,
    as_json: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """A dataset's lineage as a tree: what it is built from (--upstream, the default) or what
    is built from it (--downstream).

    Parameters
    ----------
    dataset
        A table's name, a qualified one or a DataHub urn (as for `phlo catalog show`).
    upstream
        What it is built from, down to the source APIs.
    downstream
        What is built from it, up to the published marts.
    depth
        How many levels to follow (1 to 50).
    as_json
        The tree as nested JSON objects {name, layer, platform, children}.
    """
    from phlo_core.catalog.read import CatalogNotFoundError, lineage

    if upstream and downstream:
        raise UsageError("--upstream and --downstream: choose one")
    if not 1 <= depth <= 50:
        raise UsageError(f"--depth must be from 1 to 50, not {depth}")
    try:
        settings = command_settings(writes=False)
        tree = lineage(settings, dataset, upstream=not downstream, depth=depth)
    except CatalogNotFoundError as exc:
        err(str(exc))
        return EXIT_FAILED
    if as_json:
        print(json.dumps(asdict(tree)))
        return 0
    for line in _tree_lines(tree):
        print(line)
    return 0


def label(name: str, platform: str, layer: str) -> str:
    """A dataset as the tree shows it: the lakehouse's by name, others with their platform."""
    from phlo_core.catalog.model import LAKE_PLATFORM

    shown_name = name if platform == LAKE_PLATFORM else f"{platform}: {name}"
    return f"{shown_name}  [{layer or platform}]"


def _tree_lines(
    node: LineageNode, prefix: str = "", last: bool = True, top: bool = True
) -> list[str]:
    text = label(node.name, node.platform, node.layer)
    lines = [text if top else f"{prefix}{'└── ' if last else '├── '}{text}"]
    inner = "" if top else prefix + ("    " if last else "│   ")
    for i, child in enumerate(node.children):
        lines += _tree_lines(child, inner, i == len(node.children) - 1, top=False)
    return lines
