"""The house rules of DESIGN.md that code can check: dependencies point one way."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "python"


def imported_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (SRC / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[str(path.relative_to(SRC))] = names
    return found


def test_core_and_cli_never_import_a_location() -> None:
    for package in ("phlo_core", "phlo_cli"):
        for module, names in imported_modules(package).items():
            assert not any(n.split(".")[0] == "locations" for n in names), module


def test_core_never_imports_the_cli() -> None:
    for module, names in imported_modules("phlo_core").items():
        assert not any(n.split(".")[0] == "phlo_cli" for n in names), module


def test_a_location_never_imports_another() -> None:
    locations = [p.name for p in (SRC / "locations").iterdir() if (p / "__init__.py").exists()]
    for location in locations:
        for module, names in imported_modules(f"locations/{location}").items():
            others = {n.split(".")[1] for n in names if n.startswith("locations.")} - {location}
            assert not others, module


# A data domain lives in its location: no core or CLI module names one.
DOMAIN_WORDS = ("glucose", "nightscout", "weather", "open-meteo", "openmeteo")


def test_core_and_cli_name_no_domain() -> None:
    for package in ("phlo_core", "phlo_cli"):
        for path in (SRC / package).rglob("*.py"):
            module = str(path.relative_to(SRC))
            text = path.read_text().lower()
            named = [word for word in DOMAIN_WORDS if word in text]
            assert not named, f"{module} names {named}"


def test_every_location_ingests_through_the_core_building_block() -> None:
    """One ingestion building block (phlo_core.ingestion), not a copy per location: a location
    that fetches from a source over HTTP ingests through it."""
    locations = [p for p in (SRC / "locations").iterdir() if (p / "definitions.py").exists()]
    fetching = [
        location
        for location in locations
        if any(
            "phlo_core.http" in names
            for module, names in imported_modules(f"locations/{location.name}").items()
            if not module.endswith("sample_server.py")
        )
    ]
    assert {p.name for p in fetching} >= {"nightscout", "weather"}
    for location in fetching:
        modules = imported_modules(f"locations/{location.name}")
        assert any("phlo_core.ingestion" in names for names in modules.values()), location.name


def test_nothing_imports_the_cli_entry_point() -> None:
    """`phlo_cli.main` only decides where a command line runs (the warm server, or here through
    `phlo_cli.cli`): the server runs commands through `phlo_cli.cli`, so no cycle is left."""
    for module, names in imported_modules("phlo_cli").items():
        assert "phlo_cli.main" not in names, module
    assert "phlo_cli/main.py" in imported_modules("phlo_cli")  # the walk found the package


def test_a_command_group_never_imports_another() -> None:
    """Each `phlo_cli/commands/<group>.py` stands alone: what two groups share is in
    phlo_cli.common or in core."""
    for module, names in imported_modules("phlo_cli/commands").items():
        own = "phlo_cli.commands." + Path(module).stem
        others = {n for n in names if n.startswith("phlo_cli.commands")} - {own}
        assert not others, f"{module} imports {others}"


# Core's role packages, each importing only those before it (and the shared modules at the top).
ROLE_ORDER = ("lakehouse", "runlogs", "runs", "dbt", "backfill", "services", "catalog")


def test_core_role_packages_import_only_earlier_roles_at_load_time() -> None:
    """Module-level imports between core's role packages point one way (a function may import
    a later role when it runs: the run logs open an instance)."""
    for role in ROLE_ORDER:
        later = set(ROLE_ORDER[ROLE_ORDER.index(role) + 1 :])
        for path in (SRC / "phlo_core" / role).rglob("*.py"):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ImportFrom) and node.module:
                    parts = node.module.split(".")
                    assert not (len(parts) > 1 and parts[1] in later), (
                        f"{path.relative_to(SRC)} imports {node.module} at load time"
                    )
