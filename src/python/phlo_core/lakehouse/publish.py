"""Marts published to PostgreSQL (schema `marts`) for dashboards.

Dashboards build views on the published marts and grant them to their readers, so a publish
never drops a published table: it replaces the table's ROWS, keeping its identity (views,
grants, indexes, comments stay), in one PostgreSQL transaction for all marts of the location.

1. Under an advisory lock that every publisher of the database takes (publishes run one at a
   time), staging tables that a killed publish left behind are dropped: whoever made them no
   longer holds the lock, so they are nobody's.
2. Each mart is copied whole from the lakehouse into a staging table beside its published one
   (DuckDB's postgres extension: column types carried over), named `_phlo_stage_<run>_<n>_<mart>`,
   all in one DuckDB transaction (one lake snapshot; a publish killed here leaves nothing).
3. One PostgreSQL transaction, for every mart: `delete` its rows, bring its columns to the
   mart's (below), `insert ... select` from staging, check the row count against the lake's,
   drop the staging table. A reader in another connection is never blocked by the delete and
   sees the old complete rows until the commit, the new complete rows after it, even inside
   a repeatable-read transaction (TRUNCATE or a drop-and-rename would show such a reader an
   empty table); an error anywhere rolls everything back.

Columns follow the mart: a new column is added (`alter table ... add column`, at the end; a
view made with `select *` keeps the columns it had); a removed or retyped column is dropped or
retyped, unless a view depends on it: then nothing is published and the error names the column
and the view to drop (and recreate after the publish). A mart published for the first time is
its staging table renamed.
"""

import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import closing, suppress
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from phlo_core.lakehouse.connect import CATALOG, lakehouse, sql_literal
from phlo_core.log import get_logger
from phlo_core.needs import NEEDS_TAG
from phlo_core.redact import redact
from phlo_core.resources import LAKEHOUSE, Lakehouse, resource
from phlo_core.settings import PhloSettings

SCHEMA = "marts"
_LOCK_KEY = 0x70686C6F  # "phlo": one advisory lock for every publisher of a database
# Staging tables: this run's are `_phlo_stage_<token>_<n>_<mart>`; earlier versions of phlo
# named theirs `<mart>__phlo_<token>` (they took the same lock, so theirs are found too).
STAGE_PREFIX = "_phlo_stage_"
_STAGE_PATTERNS = (rf"^{STAGE_PREFIX}[0-9a-f]{{8}}_[0-9]+_", r"^.+__phlo_[0-9a-f]{8}$")
_IDENTIFIER_MAX = 63  # PostgreSQL's NAMEDATALEN - 1
log = get_logger(__name__)


class PublishError(RuntimeError):
    """The marts could not be published; one line, no secret in it."""


def _connect(url: str) -> Any:
    import psycopg2

    return psycopg2.connect(url, connect_timeout=10)


def staging_names(tables: Sequence[str], token: str) -> dict[str, str]:
    """Each mart's staging table for run `token` (8 hex digits): recognisable by its prefix,
    unique by its number even where a long mart name is cut to PostgreSQL's 63 characters."""
    if not re.fullmatch(r"[0-9a-f]{8}", token):
        raise ValueError(f"staging token {token!r} is not 8 hex digits")
    return {
        table: f"{STAGE_PREFIX}{token}_{index}_{table}"[:_IDENTIFIER_MAX]
        for index, table in enumerate(tables)
    }


def publish(tables: Sequence[str], settings: PhloSettings) -> dict[str, int]:
    """Replace the rows of each `marts.<table>` in PostgreSQL with the lakehouse's, all in one
    transaction; rows published per table."""
    import psycopg2
    from psycopg2 import sql

    assert settings.phlo_publish_postgres_url is not None
    url = settings.phlo_publish_postgres_url.get_secret_value()
    staged = staging_names(tables, secrets.token_hex(4))
    try:
        with closing(_connect(url)) as pg:
            pg.autocommit = True
            with pg.cursor() as cur:
                # The schema is looked up first: `create schema if not exists` needs CREATE
                # on the database even when the schema is there (a database prepared for phlo
                # may grant only the schema). Made under the lock: two first publishes would
                # collide.
                cur.execute(
                    "select pg_advisory_lock(%s), exists (select from pg_namespace "
                    "where nspname = %s)",
                    [_LOCK_KEY, SCHEMA],
                )
                row = cur.fetchone()
            try:
                with pg.cursor() as cur:
                    if not (row and row[1]):
                        make = sql.SQL("create schema if not exists {}")
                        cur.execute(make.format(sql.Identifier(SCHEMA)))
                    _drop_stale_staging(cur)
                counts = _stage(staged, url, settings)
                pg.autocommit = False
                with pg.cursor() as cur:
                    found = _describe(cur, [*staged, *staged.values()])
                    for table, staging in staged.items():
                        _replace(cur, table, staging, counts[table], found)
                pg.commit()
                return counts
            except BaseException:
                with suppress(Exception):  # a lost connection: the error that matters is above
                    pg.rollback()
                pg.autocommit = True
                with pg.cursor() as cur:
                    for staging in staged.values():
                        drop = sql.SQL("drop table if exists {}")
                        cur.execute(drop.format(sql.Identifier(SCHEMA, staging)))
                raise
            finally:
                pg.autocommit = True
                with pg.cursor() as cur:
                    cur.execute("select pg_advisory_unlock(%s)", [_LOCK_KEY])
    except psycopg2.Error as exc:
        raise PublishError(f"cannot publish to PostgreSQL: {_first_line(exc)}") from None


def _drop_stale_staging(cur: Any) -> None:
    """Drop staging tables of publishes that died (killed, lost their connection). Called
    under the advisory lock: every publisher stages only while it holds that lock, and a dead
    one's lock went with its connection, so every staging table found now is a dead one's.
    Only this role's own tables are touched."""
    cur.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = %s and c.relkind = 'r' and pg_get_userbyid(c.relowner) = current_user "
        "and (c.relname ~ %s or c.relname ~ %s)",
        [SCHEMA, *_STAGE_PATTERNS],
    )
    import psycopg2
    from psycopg2 import sql

    for (name,) in cur.fetchall():
        try:
            cur.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(SCHEMA, name)))
        except psycopg2.Error as exc:  # something of the user's depends on it: left alone
            log.warning(
                "stale staging table kept", table=f"{SCHEMA}.{name}", reason=_first_line(exc)
            )
        else:
            log.info("stale staging table dropped", table=f"{SCHEMA}.{name}")


# A table's oid and its columns in order, with their types as PostgreSQL spells them.
Table = tuple[int, dict[str, str]]


def _describe(cur: Any, names: list[str]) -> dict[str, Table]:
    """The tables among `marts.<name>` (one query for all). Anything but a table holding a
    mart's name is an error."""
    cur.execute(
        "select c.relname, c.oid, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod) "
        "from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped "
        "where n.nspname = %s and c.relname = any(%s) order by c.relname, a.attnum",
        [SCHEMA, names],
    )
    found: dict[str, Table] = {}
    for name, oid, kind, column, type_ in cur.fetchall():
        if kind not in ("r", "p"):
            raise PublishError(
                f"{SCHEMA}.{name} is not a table (relkind {kind}): phlo publishes the mart "
                "there; rename or drop what holds its name"
            )
        columns = found.setdefault(name, (oid, {}))[1]
        if column is not None:
            columns[column] = type_
    return found


def _dependent_views(cur: Any, oid: int, columns: list[str]) -> dict[str, list[str]]:
    """column of table `oid` -> the views (or materialized views) that use it, named in full."""
    cur.execute(
        "select distinct a.attname, case v.relkind when 'm' then 'materialized view ' "
        "else 'view ' end || quote_ident(n.nspname) || '.' || quote_ident(v.relname) "
        "from pg_depend d "
        "join pg_rewrite r on d.classid = 'pg_rewrite'::regclass and d.objid = r.oid "
        "join pg_class v on v.oid = r.ev_class "
        "join pg_namespace n on n.oid = v.relnamespace "
        "join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid "
        "where d.refclassid = 'pg_class'::regclass and d.refobjid = %s "
        "and v.oid <> d.refobjid and a.attname = any(%s) order by 1, 2",
        [oid, columns],
    )
    found: dict[str, list[str]] = {}
    for column, view in cur.fetchall():
        found.setdefault(column, []).append(view)
    return found


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _replace(cur: Any, table: str, staging: str, lake_rows: int, found: dict[str, Table]) -> None:
    """Inside the publishing transaction: `marts.<table>` gets the staged rows and columns."""
    from psycopg2 import sql

    target, stage = sql.Identifier(SCHEMA, table), sql.Identifier(SCHEMA, staging)
    new = found[staging][1]
    published = found.get(table)
    if published is None:
        cur.execute(sql.SQL("select count(*) from {}").format(stage))
        _check_rows(table, int(cur.fetchone()[0]), lake_rows)
        cur.execute(sql.SQL("alter table {} rename to {}").format(stage, sql.Identifier(table)))
        return
    oid, old = published
    removed = [column for column in old if column not in new]
    retyped = [column for column in new if column in old and old[column] != new[column]]
    added = [column for column in new if column not in old]
    blocked = _dependent_views(cur, oid, removed + retyped) if removed or retyped else {}
    if blocked:
        raise PublishError(_blocked_message(table, old, new, blocked))
    cur.execute(sql.SQL("delete from {}").format(target))
    # Types as PostgreSQL itself spelled them for the staging table (format_type).
    alter = sql.SQL("alter table {} ").format(target)
    for column in removed:
        cur.execute(alter + sql.SQL("drop column {}").format(sql.Identifier(column)))
    for column in retyped:
        # No row is left in this transaction: nothing to convert.
        change = sql.SQL("alter column {} type {} using null")
        cur.execute(alter + change.format(sql.Identifier(column), sql.SQL(new[column])))
    for column in added:
        add = sql.SQL("add column {} {}")
        cur.execute(alter + add.format(sql.Identifier(column), sql.SQL(new[column])))
    names = sql.SQL(", ").join([sql.Identifier(column) for column in new])
    insert = sql.SQL("insert into {} ({}) select {} from {}")
    cur.execute(insert.format(target, names, names, stage))
    _check_rows(table, cur.rowcount, lake_rows)
    cur.execute(sql.SQL("drop table {}").format(stage))
    if removed or retyped or added:
        log.info(
            "published columns changed",
            table=f"{SCHEMA}.{table}",
            added=",".join(added),
            removed=",".join(removed),
            retyped=",".join(retyped),
        )


def _check_rows(table: str, published: int, lake: int) -> None:
    # What PostgreSQL holds is what the lake holds, or nothing is published.
    if published != lake:
        raise PublishError(
            f"{SCHEMA}.{table}: {published} rows staged in PostgreSQL, {lake} in the lake; "
            "nothing published"
        )


def _blocked_message(
    table: str, old: dict[str, str], new: dict[str, str], blocked: dict[str, list[str]]
) -> str:
    changes = []
    for column, views in blocked.items():
        change = (
            f"column {column} is no longer in the mart"
            if column not in new
            else f"column {column} changes type from {old[column]} to {new[column]}"
        )
        changes.append(f"{change} and {', '.join(views)} depends on it")
    return (
        f"cannot publish {SCHEMA}.{table}: {'; '.join(changes)}; drop those views (or change "
        "them not to use the column), publish again, then recreate them; nothing published"
    )


def _stage(staged: dict[str, str], url: str, settings: PhloSettings) -> dict[str, int]:
    try:
        return _copy(staged, url, settings)
    except PublishError:
        raise
    except Exception as exc:
        # Not chained: DuckDB's message may quote the URL with its password, and Dagster keeps
        # an error's causes in the event log.
        raise PublishError(f"cannot stage the marts in PostgreSQL: {_first_line(exc)}") from None


def _copy(staged: dict[str, str], url: str, settings: PhloSettings) -> dict[str, int]:
    """Every mart into its staging table in one DuckDB transaction: one lake snapshot for the
    rows and their counts, and in PostgreSQL one transaction, so a publish killed while it
    copies leaves no staging table."""
    counts: dict[str, int] = {}
    with lakehouse(settings, read_only=True) as con:
        con.execute(f"attach {sql_literal(url)} as published (type postgres)")
        try:
            con.execute("begin")
            try:
                for table, staging in staged.items():
                    source = f"{CATALOG}.{SCHEMA}.{_quote(table)}"
                    con.execute(
                        f"create table published.{SCHEMA}.{_quote(staging)} as "
                        f"select * from {source}"
                    )
                    row = con.execute(f"select count(*) from {source}").fetchone()
                    counts[table] = int(row[0]) if row else 0
                con.execute("commit")
            except BaseException:
                with suppress(Exception):
                    con.execute("rollback")
                raise
        finally:
            con.execute("detach published")
    return counts


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return redact(lines[0] if lines else type(exc).__name__)


def build_publish_asset(group_name: str, marts: Sequence[AssetKey]) -> AssetsDefinition:
    """`<group>_published_marts`: the location's marts in PostgreSQL, after they are built.
    Without PHLO_PUBLISH_POSTGRES_URL the step logs that it skipped and materializes nothing."""
    names = [key.path[-1] for key in marts]

    @asset(
        name=f"{group_name}_published_marts",
        group_name=group_name,
        deps=list(marts),
        output_required=False,
        kinds={"postgres"},
        tags={NEEDS_TAG: "PHLO_PUBLISH_POSTGRES_URL"},
        required_resource_keys={LAKEHOUSE},
        description=(
            f"The marts ({', '.join(names)}) in PostgreSQL schema `{SCHEMA}` for dashboards, "
            "swapped in atomically (PHLO_PUBLISH_POSTGRES_URL)."
        ),
    )
    def _published(context: AssetExecutionContext) -> Iterator[MaterializeResult]:
        settings = resource(context, LAKEHOUSE, Lakehouse).settings
        if settings.phlo_publish_postgres_url is None:
            log.info(
                "publishing skipped: PHLO_PUBLISH_POSTGRES_URL is not set", marts=",".join(names)
            )
            return
        counts = publish(names, settings)
        log.info("published", schema=SCHEMA, **counts)
        yield MaterializeResult(
            metadata={f"rows {table}": count for table, count in counts.items()}
        )

    return _published
