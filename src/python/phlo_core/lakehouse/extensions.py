"""DuckDB's extensions the lakehouse needs (ducklake, and httpfs for S3), installed from the
files shipped with the package: nothing is downloaded at run time."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from phlo_core.settings import PhloSettings

if TYPE_CHECKING:
    import duckdb


DUCKDB_VERSION = "v1.5.5"


# extension name -> python package of the wheel that ships it
EXTENSIONS = {
    "ducklake": "duckdb_extension_ducklake",
    "sqlite_scanner": "duckdb_extension_sqlite_scanner",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
    "httpfs": "duckdb_extension_httpfs",
}


install_lock = threading.Lock()


def extension_file(name: str) -> Path:
    package = importlib.import_module(EXTENSIONS[name])
    assert package.__file__ is not None
    return (
        Path(package.__file__).parent / "extensions" / DUCKDB_VERSION / f"{name}.duckdb_extension"
    )


def _missing_extensions(settings: PhloSettings) -> list[str]:
    folder = settings.extension_directory
    return [
        name
        for name in EXTENSIONS
        if not any(folder.glob(f"{DUCKDB_VERSION}/*/{name}.duckdb_extension"))
    ]


def install_extensions(con: duckdb.DuckDBPyConnection, settings: PhloSettings) -> None:
    with install_lock:
        for name in _missing_extensions(settings):
            con.execute(f"install '{extension_file(name)}'")


def ensure_extensions(settings: PhloSettings) -> None:
    """Install the DuckDB extensions into PHLO_HOME's extension folder unless already there."""
    if not _missing_extensions(settings):
        return
    import duckdb

    settings.extension_directory.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"extension_directory": str(settings.extension_directory)})
    try:
        install_extensions(con, settings)
    finally:
        con.close()
