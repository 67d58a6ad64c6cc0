"""The one place that opens DuckDB with the DuckLake catalog `lake` attached.

Extensions come from the `duckdb-extension-*` wheels and are installed offline into a folder
under PHLO_HOME, so nothing is downloaded at run time and tests stay hermetic. Writes that replace
a partition run as one DuckLake transaction (one snapshot) and are retried as a whole on commit
conflicts: with a SQLite catalog a few percent of concurrent commits fail with `database is
locked`, and two writers to the same table can conflict on any catalog.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phlo_core.lakehouse.locks import write_atomically
from phlo_core.redact import redact
from phlo_core.settings import PhloSettings, get_settings

if TYPE_CHECKING:
    import duckdb

from phlo_core.lakehouse.extensions import install_extensions

CATALOG = "lake"


LAYERS = ("raw", "bronze", "silver", "gold", "marts")


# One row: when this lakehouse was created. Dagster's history outlives a lakehouse that is
# replaced; days materialized before its creation are not in it.
IDENTITY_TABLE = f"{CATALOG}.main.phlo_lakehouse"


_RETRYABLE_MARKERS = ("database is locked", "conflict", "busy")


class LakehouseError(RuntimeError):
    """The lakehouse could not be opened or written."""


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def attach_sql(settings: PhloSettings, *, read_only: bool = False) -> str:
    """The ATTACH statement for `lake`. In the default layout (catalog and data both under
    PHLO_HOME) the home is movable: the catalog keeps file paths relative to its data path,
    and the data path recorded in it is overridden by where the home is now."""
    options = f"data_path {sql_literal(settings.lake_data_path)}"
    if settings.lake_moves_with_home:
        options += ", override_data_path true"
    if read_only:
        options += ", read_only"
    return (
        f"attach if not exists {sql_literal('ducklake:' + settings.lake_catalog)} as {CATALOG} "
        f"({options})"
    )


def s3_secret_sql(settings: PhloSettings) -> str | None:
    """A temporary (this connection's) DuckDB secret for the lake's bucket, or None when the
    data path is local. Only the lake's own bucket is in its scope."""
    if not settings.lake_on_s3:
        return None
    endpoint, use_ssl = settings.s3_endpoint
    secret = settings.phlo_s3_secret_access_key
    assert settings.phlo_s3_access_key_id and secret is not None  # settings validate this
    bucket = "s3://" + settings.lake_data_path.removeprefix("s3://").split("/", 1)[0]
    fields = [
        "type s3",
        f"key_id {sql_literal(settings.phlo_s3_access_key_id)}",
        f"secret {sql_literal(secret.get_secret_value())}",
        f"region {sql_literal(settings.phlo_s3_region)}",
        f"url_style {sql_literal(settings.phlo_s3_url_style)}",
        f"use_ssl {'true' if use_ssl else 'false'}",
        f"scope {sql_literal(bucket)}",
    ]
    if endpoint:
        fields.append(f"endpoint {sql_literal(endpoint)}")
    return f"create or replace temporary secret phlo_lake_s3 ({', '.join(fields)})"


def _check_object_store(con: duckdb.DuckDBPyConnection, settings: PhloSettings) -> None:
    """One small listing under the data path (a prefix nothing has): wrong keys, a missing
    bucket or a server that does not answer fail here, named, instead of mid-write."""
    probe = settings.lake_data_path + ".phlo-probe-*"
    try:
        con.execute(f"select count(*) from glob({sql_literal(probe)})").fetchall()
    except Exception as exc:
        raise LakehouseError(explain_object_store_error(str(exc), settings)) from None


def explain_object_store_error(text: str, settings: PhloSettings) -> str:
    endpoint = settings.s3_endpoint[0] or "AWS S3"
    bucket = settings.lake_data_path.removeprefix("s3://").split("/", 1)[0]
    for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
        if code in text:
            return (
                f"the object store at {endpoint} refused the lake's credentials ({code}): check "
                "PHLO_S3_ACCESS_KEY_ID and PHLO_S3_SECRET_ACCESS_KEY"
            )
    if "NoSuchBucket" in text or "404" in text:
        return (
            f"bucket {bucket!r} does not exist at {endpoint} (PHLO_LAKE_DATA_PATH "
            f"{settings.lake_data_path}): create it, or point PHLO_LAKE_DATA_PATH at one that does"
        )
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return f"the object store at {endpoint} (PHLO_S3_ENDPOINT) failed: {redact(lines[0])}"


def _first_file(folder: Path) -> Path | None:
    """Any file below `folder` (the walk stops at the first), None when there is none."""
    for root, _dirs, files in os.walk(folder):
        if files:
            return Path(root) / files[0]
    return None


def _sqlite_catalog_state(catalog_file: Path) -> str:
    """ "missing", "empty" (no DuckLake tables: a new or replaced file) or "ok"."""
    if not catalog_file.exists():
        return "missing"
    if catalog_file.stat().st_size == 0:
        return "empty"
    found = _read_catalog(
        catalog_file, "select count(*) from sqlite_master where name = 'ducklake_metadata'"
    )
    if found is None:
        return "ok"  # not readable as SQLite here: DuckLake's attach says what is wrong
    return "ok" if found[0][0] else "empty"


def _read_catalog(catalog_file: Path, sql: str, params: Sequence[Any] = ()) -> list[Any] | None:
    """Rows of `sql` read from a SQLite catalog file opened read-only; None when it cannot be
    read as SQLite (or lacks what `sql` names)."""
    import sqlite3

    try:
        uri = f"{catalog_file.absolute().as_uri()}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as db:
            return db.execute(sql, params).fetchall()
    except sqlite3.Error:
        return None


def refuse_orphaned_data(settings: PhloSettings) -> None:
    """Raise LakehouseError when an embedded catalog is missing or empty while the data folder
    already holds files: attaching would silently start a new lakehouse beside the old data,
    and the old days, still counted as done by Dagster, would never be rebuilt.

    Race-free with a process creating a new lakehouse: DuckLake writes no data file before
    its catalog's tables are committed."""
    if not settings.lake_catalog.startswith("sqlite:") or "://" in settings.lake_data_path:
        return
    data = Path(settings.lake_data_path)
    catalog_file = Path(settings.lake_catalog.removeprefix("sqlite:"))
    if not data.is_dir():
        return
    state = _sqlite_catalog_state(catalog_file)
    if state == "ok" or _first_file(data) is None:
        return
    raise LakehouseError(
        f"the lake's catalog {catalog_file} is {state} but its data folder {data} holds files "
        "of a lakehouse: restore the catalog file (from a backup), or move the data folder "
        "away to start a new lakehouse"
    )


def _ensure_identity(con: duckdb.DuckDBPyConnection) -> None:
    """Give the lakehouse its birth record (IDENTITY_TABLE) unless it has one: a catalog
    created now records now; one that already holds tables (made before phlo kept the
    record) records the epoch, so every earlier materialization keeps counting."""
    found = con.execute(
        "select table_name from duckdb_tables() where database_name = ? and schema_name = 'main'",
        [CATALOG],
    ).fetchall()
    if (IDENTITY_TABLE.rsplit(".", 1)[1],) in found:
        return
    has_tables = con.execute(
        "select count(*) from duckdb_tables() where database_name = ?", [CATALOG]
    ).fetchone()
    born = "timestamptz 'epoch'" if has_tables and has_tables[0] else "now()"
    con.execute("begin transaction")
    try:
        con.execute(f"create table if not exists {IDENTITY_TABLE} (created_at timestamptz)")
        con.execute(f"insert into {IDENTITY_TABLE} select {born}")
        con.execute("commit")
    except BaseException:
        with suppress(Exception):
            con.execute("rollback")
        raise


def lakehouse_created(settings: PhloSettings) -> dt.datetime | None:
    """When this lakehouse was created (its birth record), for counting only materializations
    that wrote into it; None when there is no lakehouse yet (nothing is in it). A lakehouse
    that has no record yet (never written since phlo keeps one) gives the epoch. A lost
    catalog beside data files, or a lakehouse that cannot be opened, is a LakehouseError: what
    it holds cannot be told then."""
    import duckdb

    refuse_orphaned_data(settings)
    catalog = settings.lake_catalog
    record = None
    if catalog.startswith("sqlite:"):
        catalog_file = Path(catalog.removeprefix("sqlite:"))
        if _sqlite_catalog_state(catalog_file) != "ok":
            return None
        record = _birth_record_id(catalog_file)
        remembered = _remembered_birth(settings, record)
        if remembered is not None:
            return remembered
    try:
        with lakehouse(settings, read_only=True) as con:
            row = con.execute(f"select min(created_at) from {IDENTITY_TABLE}").fetchone()
    except LakehouseError as exc:
        if "lakehouse is empty" in str(exc):
            return None
        raise
    except duckdb.CatalogException:
        row = None
    if not row or row[0] is None:
        return dt.datetime.fromtimestamp(0, dt.UTC)
    if record is not None:
        _remember_birth(settings, record, row[0])
    return row[0]


# The birth record never changes once written, and reading it opens DuckDB (its extensions'
# signatures checked, the catalog attached: about 0.3 s of `phlo status`). An embedded catalog's
# record is remembered under PHLO_HOME/cache with the DuckLake id of the table that holds it
# (read from the SQLite catalog directly): another lakehouse, or a record made again, has
# another id.
def _birth_cache(settings: PhloSettings) -> Path:
    return settings.home / "cache" / "lakehouse.json"


def _birth_record_id(catalog_file: Path) -> str | None:
    rows = _read_catalog(
        catalog_file,
        "select table_uuid from ducklake_table where table_name = ? and end_snapshot is null",
        [IDENTITY_TABLE.rsplit(".", 1)[1]],
    )
    return str(rows[0][0]) if rows is not None and len(rows) == 1 else None


def _remembered_birth(settings: PhloSettings, record: str | None) -> dt.datetime | None:
    if record is None:
        return None
    try:
        cached = json.loads(_birth_cache(settings).read_text())
        if cached.get("record") == record:
            return dt.datetime.fromisoformat(cached["created_at"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _remember_birth(settings: PhloSettings, record: str, created_at: dt.datetime) -> None:
    path = _birth_cache(settings)
    with suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps({"record": record, "created_at": created_at.isoformat()}))


def _prepare_local_folders(settings: PhloSettings, *, read_only: bool) -> None:
    settings.extension_directory.mkdir(parents=True, exist_ok=True)
    if read_only:
        return  # a reader creates nothing: what is missing reads as empty
    if settings.lake_catalog.startswith("sqlite:"):
        Path(settings.lake_catalog.removeprefix("sqlite:")).parent.mkdir(
            parents=True, exist_ok=True
        )
    if "://" not in settings.lake_data_path:
        Path(settings.lake_data_path).mkdir(parents=True, exist_ok=True)


def connect(
    settings: PhloSettings | None = None, *, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with `lake` attached, its layer schemas present, in use.

    `read_only` attaches the catalog read-only: statements that would change it fail.
    """
    import duckdb

    settings = settings or get_settings()
    refuse_orphaned_data(settings)
    _prepare_local_folders(settings, read_only=read_only)
    threads = settings.duckdb_threads
    con = duckdb.connect(
        config={
            "extension_directory": str(settings.extension_directory),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": True,
            **({"threads": threads} if threads is not None else {}),
        }
    )
    try:
        con.execute("set TimeZone = 'UTC'")
        install_extensions(con, settings)
        secret = s3_secret_sql(settings)
        if secret:
            con.execute(secret)
            _check_object_store(con, settings)

        def attach() -> None:
            # Every statement here reads the catalog, so any of them can meet `database is
            # locked` on SQLite: the whole sequence is retried (each step is idempotent).
            con.execute(attach_sql(settings, read_only=read_only))
            for layer in [] if read_only else LAYERS:
                con.execute(f"create schema if not exists {CATALOG}.{layer}")
            if not read_only:
                _ensure_identity(con)
            con.execute(f"use {CATALOG}")

        # Processes attaching a PostgreSQL catalog nobody created yet all try to create its
        # tables; the losers fail on PostgreSQL's unique catalog entries. Attaching again finds
        # the catalog the winner made.
        retrying(attach, retry_on=_first_attach_race)
    except LakehouseError:
        con.close()
        raise
    except Exception as exc:
        con.close()
        reason = redact(first_line(exc))
        if "creating a new DuckLake is explicitly disabled" in reason:
            raise LakehouseError(
                f"the lakehouse is empty: no catalog in {redact(settings.lake_catalog)} yet "
                "(materialize something first)"
            ) from None
        if "does not match existing data path" in reason:
            reason += (
                " Set PHLO_LAKE_DATA_PATH to the path the catalog records (a lakehouse in the "
                "default layout under PHLO_HOME moves with its home; one with a configured "
                "catalog or data path stays where it was created)"
            )
        # Not chained: Dagster stores an error's causes in the event log, and the driver's
        # message may quote the catalog's connection string with its password.
        raise LakehouseError(f"cannot open the lakehouse catalog: {reason}") from None
    return con


@contextmanager
def lakehouse(
    settings: PhloSettings | None = None, *, read_only: bool = False
) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(settings, read_only=read_only)
    try:
        yield con
    finally:
        con.close()


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def is_retryable(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _RETRYABLE_MARKERS)


def _first_attach_race(exc: BaseException) -> bool:
    text = str(exc)
    return is_retryable(exc) or (
        "Failed to init" in text and ("duplicate key value" in text or "already exists" in text)
    )


def retrying(
    action: Any,
    attempts: int = 15,
    retry_on: Callable[[BaseException], bool] = is_retryable,
    max_wait: float = 1.0,
) -> Any:
    """`action()`, again after a random, growing pause (up to `max_wait` seconds) while it
    fails with what `retry_on` accepts."""
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

    for attempt in Retrying(
        retry=retry_if_exception(retry_on),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.05, max=max_wait),
        reraise=True,
    ):
        with attempt:
            return action()
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


class QueryError(ValueError):
    """The SQL is not valid for the lakehouse (syntax, unknown table or column, a write)."""


def check_catalog(settings: PhloSettings) -> None:
    """Raise LakehouseError when an embedded catalog does not exist yet (nothing to query), or
    is missing or empty beside a data folder that holds files."""
    refuse_orphaned_data(settings)
    if not settings.lake_catalog.startswith("sqlite:"):
        return
    catalog_file = Path(settings.lake_catalog.removeprefix("sqlite:"))
    if catalog_file.exists():
        return
    demo = settings.home / "demo"
    hint = (
        f"; the demo's sample lakehouse is in {demo}: set PHLO_HOME={demo} to query it"
        if demo.exists()
        else ""
    )
    raise LakehouseError(
        f"the lakehouse is empty: no catalog at {catalog_file} yet "
        f"(materialize something first{hint})"
    )


def query(sql: str, settings: PhloSettings | None = None) -> QueryResult:
    """Run one statement of TRUSTED SQL (Phlo's own: reports, tests) on a read-only attach.

    User SQL goes through `phlo_core.lakehouse.sandbox.run_query`, which also confines what it
    can read and how much memory and time it takes.
    """
    import duckdb

    settings = settings or get_settings()
    check_catalog(settings)
    with lakehouse(settings, read_only=True) as con:
        try:
            relation = con.sql(sql)
            if relation is None:
                return QueryResult(columns=[], rows=[])
            return QueryResult(columns=list(relation.columns), rows=relation.fetchall())
        except (
            duckdb.ParserException,
            duckdb.BinderException,
            duckdb.CatalogException,
            duckdb.InvalidInputException,
        ) as exc:
            raise QueryError(first_line(exc)) from None
