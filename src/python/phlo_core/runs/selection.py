"""Which assets of which code location a selection means, across the workspace's locations.

`a,b` names assets, `a+` adds everything downstream of a (in every location that reads it),
`+a` everything upstream of a in its own location. A name is an asset's, or a table's that
one asset writes (`orders` for an ingestion `dlt_orders` writing `raw.orders`). A name is found
in whichever location defines it; a name two locations define is an error. Locations come
back in dependency order: one that reads another's selected assets comes after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from phlo_core.runs.asset_index import AssetIndex, cached, fingerprint, index_of, remember
from phlo_core.settings import PhloSettings
from phlo_core.workspace import LocationRef, load_definitions, location_refs, preflight

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
    asset names (`phlo_core.runs.asset_index`) without loading any location: an unknown name is a
    SelectionError in milliseconds. With no current index, names pass unchecked (loading the
    locations checks them)."""
    tokens = parse_selection(selection)
    index = cached(settings)
    if index is not None:
        tokens = resolve_names(tokens, index)
    return ",".join(("+" if up else "") + name + ("+" if down else "") for name, up, down in tokens)


def preflight_selection(selection: str, settings: PhloSettings) -> bool:
    """The locations' own checks of the settings the selected assets need (`preflight`), from
    the remembered asset names, before anything is printed or loaded: a missing setting is one
    usage error. False when there is no current index: the engine checks once the locations
    are loaded."""
    index = cached(settings)
    if index is None:
        return False
    refs = {ref.name: ref for ref in location_refs(settings)}
    for plan in plan_names(selection, index):
        if plan.location in refs:
            preflight(refs[plan.location], settings, plan.names)
    return True


def with_downstream(selection: str) -> str:
    """Every name of the selection with everything downstream of it (`a,+b` -> `a+,+b+`)."""
    return ",".join(("+" if up else "") + name + "+" for name, up, _ in parse_selection(selection))


@dataclass
class PlannedNames:
    """A location's share of a selection, by name (what `plan_names` answers)."""

    location: str
    names: list[str] = field(default_factory=list)
    after: set[str] = field(default_factory=set)


def _in_dependency_order(plans: list[PlannedNames], index: AssetIndex) -> list[PlannedNames]:
    """Locations that read another's assets run after it (workspace order otherwise); each
    plan's `after` names the planned locations it reads from."""
    by_name = {plan.location: plan for plan in plans}
    owner_of = {name: plan.location for plan in plans for name in index.locations[plan.location]}
    for plan in plans:
        read = set(index.graphs[plan.location].parents) - set(index.locations[plan.location])
        plan.after = {owner_of[name] for name in read if name in owner_of} - {plan.location}
    ordered: list[PlannedNames] = []

    def visit(plan: PlannedNames, path: tuple[str, ...]) -> None:
        if plan in ordered or plan.location in path:
            return
        for name in sorted(plan.after):
            visit(by_name[name], (*path, plan.location))
        ordered.append(plan)

    for plan in plans:
        visit(plan, ())
    return ordered


def plan_names(selection: str, index: AssetIndex) -> list[PlannedNames]:
    """Which assets of which location a selection means, from the index alone: `a,b` names,
    `a+` a and everything downstream (in any location that reads it), `+a` a and everything
    upstream in its own location. A name defined by two locations is an error. Locations come
    in dependency order; each one's names in the order they were reached (sorted per step)."""
    plans = {location: PlannedNames(location) for location in index.locations}

    def add(location: str, names: set[str]) -> set[str]:
        plan = plans[location]
        new = {n for n in names if n in index.locations[location] and n not in plan.names}
        plan.names.extend(sorted(new))
        return new

    for name, upstream, downstream in resolve_names(parse_selection(selection), index):
        owners = [location for location, assets in index.locations.items() if name in assets]
        if len(owners) > 1:
            raise SelectionError(
                f"asset {name!r} is defined in two code locations ({' and '.join(owners)}): "
                "rename one of them; an asset name must be unique across the workspace"
            )
        owner = owners[0]
        graph = index.graphs[owner]
        chosen = {name}
        if downstream:
            chosen = graph.reach(chosen, down=True)
        if upstream:
            chosen = graph.reach(chosen, down=False)
        add(owner, chosen)
        if not downstream:
            continue
        # Everything downstream in the other locations that read them (and in those that read
        # what those build, and so on).
        pending, visited = set(chosen), set(chosen)
        while pending:
            found: set[str] = set()
            for location, other in index.graphs.items():
                seeds = {n for n in pending if n in other.parents}
                if location != owner and seeds:
                    reached = other.reach(seeds, down=True)
                    add(location, reached)
                    found |= {n for n in reached if n in index.locations[location]}
            pending = found - visited
            visited |= found
    return _in_dependency_order([plan for plan in plans.values() if plan.names], index)


def plan_selection(selection: str, settings: PhloSettings) -> list[LocationPlan]:
    """`plan_names` on the workspace's locations, loaded (and remembered in the asset index)."""
    from dagster import AssetKey

    taken = fingerprint(settings)
    refs = {ref.name: ref for ref in location_refs(settings)}
    definitions = {name: load_definitions(ref, settings) for name, ref in refs.items()}
    index = index_of(definitions)
    remember(index, settings, taken)
    return [
        LocationPlan(
            refs[plan.location],
            definitions[plan.location],
            [AssetKey.from_user_string(name) for name in plan.names],
            plan.after,
        )
        for plan in plan_names(selection, index)
    ]
