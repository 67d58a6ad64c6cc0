"""Code locations, found through the Dagster workspace file rather than imported by name."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from dagster import Definitions

    from phlo_core.settings import PhloSettings


def _repo_root() -> Path:
    """The folder holding `infra/` and `src/dbt/`: the checkout (this file is
    src/python/phlo_core/workspace.py in it) or, in a PEX, the folder the code was placed in,
    where the packaged dbt projects and instance template keep their paths from the checkout."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[3], here.parents[1]):
        if (candidate / "infra" / "dagster").is_dir() or (candidate / "src" / "dbt").is_dir():
            return candidate
    return here.parents[3]


REPO_ROOT = _repo_root()
DEFAULT_WORKSPACE = REPO_ROOT / "infra" / "dagster" / "workspace.yaml"
DBT_ROOT = REPO_ROOT / "src" / "dbt"  # every location's dbt project, and the shared package
ENV_EXAMPLE = REPO_ROOT / ".env.example"  # phlo's own settings; each location has its env.example
LOCATION_ENV_EXAMPLE = "env.example"  # a location's settings, documented, beside its modules


class WorkspaceError(RuntimeError):
    """The workspace file is missing or malformed, or a location fails to load."""


@dataclass(frozen=True)
class LocationRef:
    name: str
    module: str

    @property
    def package(self) -> str:
        """The location's package: `locations.orders` for `locations.orders.definitions`."""
        return self.module.rsplit(".", 1)[0]


def workspace_file(settings: PhloSettings) -> Path:
    return workspace_at(settings.phlo_workspace)


def workspace_at(setting: Path | None) -> Path:
    """The workspace file PHLO_WORKSPACE names (None: phlo's own)."""
    return setting.expanduser().resolve() if setting else DEFAULT_WORKSPACE


def configured_workspace() -> Path:
    """The workspace file the settings name, found without loading them (pydantic: 0.2 s), for
    the warm server's client: `workspace_file(get_settings())` whenever those load."""
    from phlo_core.setting_sources import raw_setting

    setting = raw_setting("phlo_workspace")
    return workspace_at(None if setting is None else Path(setting))


def location_refs(settings: PhloSettings) -> list[LocationRef]:
    return workspace_refs(workspace_file(settings))


def workspace_refs(path: Path) -> list[LocationRef]:
    """The code locations the workspace file `path` lists."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise WorkspaceError(f"cannot read workspace file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise WorkspaceError(f"workspace file {path} is not valid YAML{line}") from None
    refs = []
    entries = document.get("load_from", []) if isinstance(document, dict) else []
    for entry in entries if isinstance(entries, list) else []:
        spec = entry.get("python_module") if isinstance(entry, dict) else None
        if isinstance(spec, str):
            # `locations.orders.definitions` is location `orders`; a bare module its own name
            parts = spec.split(".")
            refs.append(LocationRef(parts[-2] if len(parts) > 1 else parts[0], spec))
        elif isinstance(spec, dict) and "module_name" in spec:
            module = spec["module_name"]
            refs.append(LocationRef(spec.get("location_name") or module, module))
    if not refs:
        raise WorkspaceError(f"workspace file {path} lists no python_module code locations")
    return refs


def location_ref(settings: PhloSettings, name: str) -> LocationRef:
    """The workspace's location called `name`; WorkspaceError naming the known ones if none."""
    refs = location_refs(settings)
    for ref in refs:
        if ref.name == name:
            return ref
    known = ", ".join(ref.name for ref in refs)
    raise WorkspaceError(
        f"no code location {name!r} in {workspace_file(settings)} (it has {known})"
    )


_BUILT: dict[tuple[str, str, str, str, str], Definitions] = {}  # newest last
_KEPT = 8  # definitions kept per process (a test session loads many homes)


def load_definitions(ref: LocationRef, settings: PhloSettings) -> Definitions:
    """The location's definitions for `settings`: its module's `build_definitions(settings)`,
    or else the one Definitions object it holds. Built once per process for each calendar and
    home (what they depend on: the partitions' time zone and first day, the days a backfill's
    run covers, and where the dbt manifests are kept): a warm server's children use the ones it
    built. Every other setting reaches a run through its resources."""
    key = (
        ref.module,
        settings.phlo_timezone,
        settings.phlo_partition_start.isoformat(),
        str(settings.phlo_backfill_days_per_run),
        str(settings.dbt_dir.resolve()),
    )
    built = _BUILT.pop(key, None) or _build_definitions(ref, settings)
    _BUILT[key] = built
    while len(_BUILT) > _KEPT:
        del _BUILT[next(iter(_BUILT))]
    return built


def _build_definitions(ref: LocationRef, settings: PhloSettings) -> Definitions:
    from dagster import Definitions

    try:
        module = importlib.import_module(ref.module)
    except Exception as exc:
        raise WorkspaceError(f"code location {ref.name} failed to load: {exc}") from exc
    build = getattr(module, "build_definitions", None)
    if callable(build):
        # A SettingsError (the location's own settings are wrong) passes through: a usage error.
        built = build(settings)
        if isinstance(built, Definitions):
            return built
    found = [value for value in vars(module).values() if isinstance(value, Definitions)]
    if len(found) != 1:
        raise WorkspaceError(f"{ref.module} must define build_definitions() or one Definitions")
    return found[0]


def preflight(ref: LocationRef, settings: PhloSettings, asset_names: list[str]) -> None:
    """Let the location check, before any run starts, that the settings the selected assets
    need are there: its definitions module may define `preflight(settings, asset_names)`,
    which raises SettingsError (a usage error, exit 2) naming the variable."""
    module = importlib.import_module(ref.module)
    check = getattr(module, "preflight", None)
    if callable(check):
        check(settings, asset_names)


def location_folder(ref: LocationRef) -> Path | None:
    """The folder of the location's package (without importing it), None if not found."""
    try:
        spec = importlib.util.find_spec(ref.package)
    except (ModuleNotFoundError, ValueError):
        return None
    places = list(spec.submodule_search_locations or []) if spec else []
    return Path(places[0]) if places else None


def env_example(settings: PhloSettings) -> str:
    """Every setting documented, as a .env file to edit: phlo's own (.env.example), then each
    workspace location's `env.example` in the order of the workspace file."""
    parts = [ENV_EXAMPLE.read_text().rstrip("\n")] if ENV_EXAMPLE.is_file() else []
    for ref in location_refs(settings):
        folder = location_folder(ref)
        own = folder / LOCATION_ENV_EXAMPLE if folder else None
        if own is not None and own.is_file():
            parts.append(own.read_text().rstrip("\n"))
    return "\n\n".join(parts) + "\n"


def grpc_workspace(settings: PhloSettings, *, host: str | None, port: int) -> str:
    """The workspace file of a deployment that runs each location as a gRPC code server (from
    its PEX or image), for Dagster's webserver and daemon: one server per location of the
    workspace file, at `host` on consecutive ports from `port`, or (host None) each at the host
    named after its location, on `port` (the service names of a compose file)."""
    refs = location_refs(settings)
    servers = [
        (ref, host or ref.name, port + index if host else port) for index, ref in enumerate(refs)
    ]
    lines = [
        f"# Derived from {workspace_file(settings).name} by `phlo deploy workspace`: the same",
        "# locations, each served over gRPC. Start each location's server (from its PEX):",
        *(
            f"#   dist/{ref.name}.pex api grpc -m {ref.module} -h {at} -p {number}"
            for ref, at, number in servers
        ),
        "# then Dagster's webserver and daemon on this file (with the same settings):",
        "#   PEX_SCRIPT=dagster-webserver dist/phlo.pex -w THIS_FILE",
        "#   PEX_SCRIPT=dagster-daemon    dist/phlo.pex run -w THIS_FILE",
    ]
    document = {
        "load_from": [
            {"grpc_server": {"host": at, "port": number, "location_name": ref.name}}
            for ref, at, number in servers
        ]
    }
    return "\n".join(lines) + "\n" + yaml.safe_dump(document, sort_keys=False)
