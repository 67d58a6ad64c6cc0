"""Which assets of which code location a selection means, across the workspace's locations.

`a,b` names assets, `a+` adds everything downstream of a (in every location that reads it),
`+a` everything upstream of a in its own location. A name is an asset's, or a table's that
one asset writes (`orders` for an ingestion `dlt_orders` writing `raw.orders`). A name is found
in whichever location defines it; a name two locations define is an error. Locations come
back in dependency order: one that reads another's selected assets comes after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from phlo_core.asset_index import AssetIndex, cached, fingerprint, index_of, remember
from phlo_core.settings import PhloSettings
from phlo_core.workspace import LocationRef, load_definitions, location_refs

if TYPE_CHECKING:
    from dagster import AssetKey, Definitions


class SelectionError(ValueError):
    """The selection names an asset no code location has (the message lists the known ones) or
    one that two locations define."""


@dataclass
class LocationPlan:
    location: LocationRef
    definitions: Definitions
    keys: list[AssetKey]
    after: set[str] = field(default_factory=set)  # locations whose selected assets it reads


def parse_selection(selection: str) -> list[tuple[str, bool, bool]]:
    """(name, with upstream, with downstream) for each comma-separated token."""
    tokens = []
    for raw in selection.split(","):
        token = raw.strip()
        if not token:
            continue
        upstream, downstream = token.startswith("+"), token.endswith("+")
        name = token.strip("+").strip()
        if not name:
            raise SelectionError(f"{raw.strip()!r} names no asset")
        tokens.append((name, upstream, downstream))
    if not tokens:
        raise SelectionError(
            "the selection is empty: name one or more assets (`name+` adds what is downstream)"
        )
    return tokens


def resolve_names(
    tokens: list[tuple[str, bool, bool]], index: AssetIndex
) -> list[tuple[str, bool, bool]]:
    """The tokens with each name as the asset it means (a table name becomes the asset that
    writes it); SelectionError for a name no location knows."""
    resolved = []
    for name, upstream, downstream in tokens:
        asset = index.resolve(name)
        if asset is None:
            writers = sorted(index.aliases().get(name, set()))
            if len(writers) > 1:
                raise SelectionError(
                    f"{name!r} is a table written by several assets ({', '.join(writers)}): "
                    "name the asset"
                )
            import difflib

            close = difflib.get_close_matches(name, sorted(index.names), n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
            listing = ", ".join(sorted(index.names))
            raise SelectionError(f"unknown asset {name!r}{hint}; known assets: {listing}")
        resolved.append((asset, upstream, downstream))
    return resolved


def check_selection(selection: str, settings: PhloSettings) -> str:
    """The selection with table names replaced by their assets, checked against the remembered
    asset names (`phlo_core.asset_index`) without loading any location: an unknown name is a
    SelectionError in milliseconds. With no current index, names pass unchecked (loading the
    locations checks them)."""
    tokens = parse_selection(selection)
    index = cached(settings)
    if index is not None:
        tokens = resolve_names(tokens, index)
    return ",".join(("+" if up else "") + name + ("+" if down else "") for name, up, down in tokens)


def with_downstream(selection: str) -> str:
    """Every name of the selection with everything downstream of it (`a,+b` -> `a+,+b+`)."""
    return ",".join(("+" if up else "") + name + "+" for name, up, _ in parse_selection(selection))


def _asset_owners(plans: list[LocationPlan]) -> dict[str, list[LocationPlan]]:
    """Which locations define (materialize) each asset name."""
    owners: dict[str, list[LocationPlan]] = {}
    for plan in plans:
        graph = plan.definitions.resolve_asset_graph()
        for key in graph.materializable_asset_keys:
            owners.setdefault(key.to_user_string(), []).append(plan)
    return owners


def _in_dependency_order(plans: list[LocationPlan]) -> list[LocationPlan]:
    """Locations that read another's assets run after it (workspace order otherwise); each
    plan's `after` names the planned locations it reads from."""
    by_name = {plan.location.name: plan for plan in plans}
    owner_of = {
        key: plan.location.name
        for plan in plans
        for key in plan.definitions.resolve_asset_graph().materializable_asset_keys
    }
    for plan in plans:
        graph = plan.definitions.resolve_asset_graph()
        read = set(graph.get_all_asset_keys()) - set(graph.materializable_asset_keys)
        plan.after = {owner_of[key] for key in read if key in owner_of} - {plan.location.name}
    ordered: list[LocationPlan] = []

    def visit(plan: LocationPlan, path: tuple[str, ...]) -> None:
        if plan in ordered or plan.location.name in path:
            return
        for name in sorted(plan.after):
            visit(by_name[name], (*path, plan.location.name))
        ordered.append(plan)

    for plan in plans:
        visit(plan, ())
    return ordered


def _add_keys(plan: LocationPlan, keys: Iterable[AssetKey]) -> set[AssetKey]:
    """Add the materializable ones among `keys` to the plan; the ones that were new."""
    graph = plan.definitions.resolve_asset_graph()
    new = {key for key in keys if key not in plan.keys and graph.get(key).is_materializable}
    plan.keys.extend(sorted(new, key=lambda key: key.to_user_string()))
    return new


def _add_readers(plans: list[LocationPlan], owner: LocationPlan, keys: set[AssetKey]) -> None:
    """Everything downstream of `keys` in the other locations that read them (and in those
    that read what those build, and so on)."""
    from dagster import AssetSelection

    pending, visited = set(keys), set(keys)
    while pending:
        found: set[AssetKey] = set()
        for plan in plans:
            if plan is owner:
                continue
            graph = plan.definitions.resolve_asset_graph()
            seeds = [key for key in pending if graph.has(key)]
            if seeds:
                reached = AssetSelection.assets(*seeds).downstream().resolve(graph)
                _add_keys(plan, reached)
                found |= {key for key in reached if graph.get(key).is_materializable}
        pending = found - visited
        visited |= found


def plan_selection(selection: str, settings: PhloSettings) -> list[LocationPlan]:
    """Which assets of which location a selection means: `a,b` names, `a+` a and everything
    downstream (in any location that reads it), `+a` a and everything upstream in its own
    location. A name defined by two locations is an error."""
    from dagster import AssetKey, AssetSelection

    tokens = parse_selection(selection)
    taken = fingerprint(settings)
    plans = [
        LocationPlan(ref, load_definitions(ref, settings), []) for ref in location_refs(settings)
    ]
    index = index_of({plan.location.name: plan.definitions for plan in plans})
    remember(index, settings, taken)
    owners = _asset_owners(plans)
    for name, upstream, downstream in resolve_names(tokens, index):
        if len(owners[name]) > 1:
            where = " and ".join(plan.location.name for plan in owners[name])
            raise SelectionError(
                f"asset {name!r} is defined in two code locations ({where}): rename one of "
                "them; an asset name must be unique across the workspace"
            )
        owner = owners[name][0]
        graph = owner.definitions.resolve_asset_graph()
        chosen = AssetSelection.assets(AssetKey.from_user_string(name))
        if downstream:
            chosen = chosen.downstream()
        if upstream:
            chosen = chosen.upstream()
        resolved = chosen.resolve(graph)
        _add_keys(owner, resolved)
        if downstream:
            _add_readers(plans, owner, set(resolved))
    return _in_dependency_order([plan for plan in plans if plan.keys])
