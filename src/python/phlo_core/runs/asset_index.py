"""The workspace's asset names and graphs, remembered, so that a selection can be checked and
planned (and `phlo status` answered) in milliseconds.

Loading the code locations (importing Dagster, dbt and every location, reading each dbt
manifest) takes seconds. Every time they are loaded the names they define, their dependencies
and which are daily are written to PHLO_HOME/cache/assets.json with a fingerprint of what could
change them: the workspace file, the files of the locations' packages and the dbt projects.
While the fingerprint holds, a selection naming an unknown asset is refused from that file
alone; when it does not (or there is no file yet) the caller loads the locations as before.

A name resolves to an asset by its name or by the table it writes (`lake.raw.orders`, `raw.orders`
or `orders` for an ingestion asset `dlt_orders`), so users may name what they see in the lakehouse.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from phlo_core.workspace import DBT_ROOT, workspace_file, workspace_refs

if TYPE_CHECKING:
    from dagster import Definitions

    from phlo_core.settings import PhloSettings

TABLE_NAME_KEY = "dagster/table_name"  # Dagster's metadata key for the table an asset writes
_SKIPPED_FOLDERS = {"__pycache__", "target", "dbt_packages", "logs", ".pytest_cache"}


@dataclass
class LocationGraph:
    """A location's asset graph by name: every node (its own assets and the ones it reads from
    elsewhere) in dependency order with its parents, and which of its assets are daily."""

    order: list[str] = field(default_factory=list)
    parents: dict[str, list[str]] = field(default_factory=dict)
    daily: list[str] = field(default_factory=list)

    def reach(self, seeds: set[str], *, down: bool) -> set[str]:
        """`seeds` and every node downstream (or upstream) of them in this graph."""
        if down:
            edges: dict[str, list[str]] = {}
            for child, parents in self.parents.items():
                for parent in parents:
                    edges.setdefault(parent, []).append(child)
        else:
            edges = self.parents
        found, pending = set(seeds), list(seeds)
        while pending:
            for other in edges.get(pending.pop(), []):
                if other not in found:
                    found.add(other)
                    pending.append(other)
        return found


@dataclass
class AssetIndex:
    """Per location, the assets it materializes (name -> the table it writes, or "") and its
    asset graph, and its jobs (name -> description): enough to plan a selection, list daily
    assets and describe the jobs without loading Dagster."""

    locations: dict[str, dict[str, str]] = field(default_factory=dict)
    graphs: dict[str, LocationGraph] = field(default_factory=dict)
    jobs: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def names(self) -> set[str]:
        return {name for assets in self.locations.values() for name in assets}

    def aliases(self) -> dict[str, set[str]]:
        """Table names (qualified and bare) -> the assets writing them, where they differ from
        the asset's own name."""
        found: dict[str, set[str]] = {}
        for assets in self.locations.values():
            for name, table in assets.items():
                parts = table.split(".") if table else []
                for alias in {".".join(parts[i:]) for i in range(len(parts))}:
                    if alias != name:
                        found.setdefault(alias, set()).add(name)
        return found

    def resolve(self, name: str) -> str | None:
        """The asset `name` means: itself, or the one asset writing a table of that name."""
        if name in self.names:
            return name
        writers = self.aliases().get(name, set())
        return next(iter(writers)) if len(writers) == 1 else None


def index_of(definitions: dict[str, Definitions]) -> AssetIndex:
    """The index of loaded locations (location name -> its definitions)."""
    index = AssetIndex()
    for location, defs in definitions.items():
        graph = defs.resolve_asset_graph()
        assets = {}
        for key in graph.materializable_asset_keys:
            table = graph.get(key).metadata.get(TABLE_NAME_KEY)
            assets[key.to_user_string()] = str(getattr(table, "text", table) or "")
        index.locations[location] = assets
        index.jobs[location] = {job.name: job.description or "" for job in defs.jobs or []}
        index.graphs[location] = LocationGraph(
            order=[key.to_user_string() for key in graph.toposorted_asset_keys],
            parents={
                key.to_user_string(): sorted(p.to_user_string() for p in graph.get(key).parent_keys)
                for key in graph.get_all_asset_keys()
            },
            daily=sorted(
                key.to_user_string()
                for key in graph.materializable_asset_keys
                if graph.get(key).partitions_def is not None
            ),
        )
    return index


# --- the cache file ---------------------------------------------------------------------------


def _cache_path(settings: PhloSettings) -> Path:
    return settings.home / "cache" / "assets.json"


def _source_folders(workspace: Path) -> list[Path]:
    folders = [DBT_ROOT, Path(__file__).parents[1]]  # all of phlo_core
    for ref in workspace_refs(workspace):
        spec = importlib.util.find_spec(ref.package.split(".")[0])
        if spec is not None and spec.submodule_search_locations:
            folders += [Path(p) for p in spec.submodule_search_locations]
    return sorted(set(folders))


def digest_files(digest: hashlib._Hash, folder: Path) -> None:
    """Add the path, modification time and size of every source file under `folder` (Python,
    SQL, YAML; not caches, build output or hidden folders) to `digest`."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_FOLDERS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".py", ".sql", ".yml", ".yaml")):
                stat = os.stat(os.path.join(root, name))
                digest.update(f"{root}/{name}:{stat.st_mtime_ns}:{stat.st_size}".encode())


def fingerprint(settings: PhloSettings) -> str:
    """A hash of what decides the asset graph: the workspace file and the modification times and
    sizes of the locations' and dbt projects' files. Settings do not: a location's assets are
    the same whatever its settings (the demo's index serves the user's commands too)."""
    return workspace_fingerprint(workspace_file(settings))


def workspace_fingerprint(workspace: Path) -> str:
    """`fingerprint` for the workspace file `workspace`."""
    digest = hashlib.sha256()
    digest.update(str(workspace).encode())
    digest.update(workspace.read_bytes() if workspace.exists() else b"")
    for folder in _source_folders(workspace):
        digest_files(digest, folder)
    return digest.hexdigest()


def remember(index: AssetIndex, settings: PhloSettings, taken: str) -> None:
    """Write the index for later calls (atomically; a failure to write is not an error).
    `taken` is the fingerprint from before the locations loaded: a file changed while they
    loaded makes the index stale at once rather than trusted with old names."""
    path = _cache_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.{os.getpid()}")
        graphs = {name: asdict(graph) for name, graph in index.graphs.items()}
        document = {
            "fingerprint": taken,
            "locations": index.locations,
            "graphs": graphs,
            "jobs": index.jobs,
        }
        scratch.write_text(json.dumps(document))
        os.replace(scratch, path)
    except OSError:
        pass


def cached(settings: PhloSettings) -> AssetIndex | None:
    """The remembered index, if nothing that decides the names changed since it was written."""
    try:
        document = json.loads(_cache_path(settings).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("fingerprint") != fingerprint(settings):
        return None
    try:
        graphs = {name: LocationGraph(**graph) for name, graph in document["graphs"].items()}
        jobs = dict(document["jobs"])
    except (KeyError, TypeError, AttributeError, ValueError):  # written by an older phlo
        return None
    return AssetIndex(document.get("locations") or {}, graphs, jobs)


def current_index(settings: PhloSettings) -> AssetIndex:
    """The index while it holds (no location is loaded), else from the locations, loaded once
    and remembered."""
    from phlo_core.workspace import load_definitions, location_refs

    index = cached(settings)
    if index is None:
        taken = fingerprint(settings)
        index = index_of({r.name: load_definitions(r, settings) for r in location_refs(settings)})
        remember(index, settings, taken)
    return index
