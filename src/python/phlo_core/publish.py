"""Marts published to PostgreSQL (schema `marts`) for dashboards.

Each mart is copied whole from the lakehouse into a staging table beside its published one
(DuckDB's postgres extension: column types carried over), then every staged table of the
location replaces its published one in ONE PostgreSQL transaction (drop, rename), after its
row count is checked against the lake's inside that transaction. A reader
sees the old tables or the new ones, never a missing or half-loaded table: its query waits for
the swap's lock and then reads the new table. Publishers are serialized by an advisory lock.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import closing
from typing import Any

from dagster import AssetKey, AssetsDefinition, MaterializeResult, asset

from phlo_core.lakehouse import CATALOG, lakehouse, sql_literal
from phlo_core.log import get_logger
from phlo_core.redact import redact
from phlo_core.settings import PhloSettings

SCHEMA = "marts"
_LOCK_KEY = 0x70686C6F  # "phlo": one advisory lock for every publisher of a database
log = get_logger(__name__)


class PublishError(RuntimeError):
    """The marts could not be published; one line, no secret in it."""


def _connect(url: str) -> Any:
    import psycopg2

    return psycopg2.connect(url, connect_timeout=10)


def publish(tables: Sequence[str], settings: PhloSettings) -> dict[str, int]:
    """Copy the lakehouse's `marts.<table>` for each table to PostgreSQL and swap them in at
    once; rows published per table."""
    import psycopg2

    assert settings.phlo_publish_postgres_url is not None
    url = settings.phlo_publish_postgres_url.get_secret_value()
    token = secrets.token_hex(4)
    staged = {table: f"{table}__phlo_{token}" for table in tables}
    try:
        with closing(_connect(url)) as pg:
            pg.autocommit = True
            with pg.cursor() as cur:
                cur.execute(f"create schema if not exists {SCHEMA}")
                cur.execute("select pg_advisory_lock(%s)", [_LOCK_KEY])
            try:
                counts = _stage(staged, url, settings)
                pg.autocommit = False
                with pg.cursor() as cur:
                    for table, staging in staged.items():
                        # What PostgreSQL holds is what the lake holds, or nothing is swapped.
                        cur.execute(f"select count(*) from {SCHEMA}.{staging}")
                        row = cur.fetchone()
                        if row is None or row[0] != counts[table]:
                            raise PublishError(
                                f"{SCHEMA}.{table}: {row[0] if row else 0} rows staged in "
                                f"PostgreSQL, {counts[table]} in the lake; nothing published"
                            )
                        cur.execute(f"drop table if exists {SCHEMA}.{table}")
                        cur.execute(f"alter table {SCHEMA}.{staging} rename to {table}")
                pg.commit()
                return counts
            except BaseException:
                pg.rollback()
                pg.autocommit = True
                with pg.cursor() as cur:
                    for staging in staged.values():
                        cur.execute(f"drop table if exists {SCHEMA}.{staging}")
                raise
            finally:
                pg.autocommit = True
                with pg.cursor() as cur:
                    cur.execute("select pg_advisory_unlock(%s)", [_LOCK_KEY])
    except psycopg2.Error as exc:
        raise PublishError(f"cannot publish to PostgreSQL: {_first_line(exc)}") from None


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
    counts: dict[str, int] = {}
    with lakehouse(settings, read_only=True) as con:
        con.execute(f"attach {sql_literal(url)} as published (type postgres)")
        try:
            for table, staging in staged.items():
                con.execute(
                    f"create table published.{SCHEMA}.{staging} as "
                    f"select * from {CATALOG}.{SCHEMA}.{table}"
                )
                row = con.execute(f"select count(*) from {CATALOG}.{SCHEMA}.{table}").fetchone()
                counts[table] = int(row[0]) if row else 0
        finally:
            con.execute("detach published")
    return counts


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return redact(lines[0] if lines else type(exc).__name__)


# An asset that materializes nothing until a setting is given (its value names the setting).
OPTIONAL_TAG = "phlo/needs_setting"


def build_publish_asset(
    group_name: str, marts: Sequence[AssetKey], settings: PhloSettings
) -> AssetsDefinition:
    """`<group>_published_marts`: the location's marts in PostgreSQL, after they are built.
    Without PHLO_PUBLISH_POSTGRES_URL the step logs that it skipped and materializes nothing."""
    names = [key.path[-1] for key in marts]

    @asset(
        name=f"{group_name}_published_marts",
        group_name=group_name,
        deps=list(marts),
        output_required=False,
        kinds={"postgres"},
        tags={OPTIONAL_TAG: "PHLO_PUBLISH_POSTGRES_URL"},
        description=(
            f"The marts ({', '.join(names)}) in PostgreSQL schema `{SCHEMA}` for dashboards, "
            "swapped in atomically (PHLO_PUBLISH_POSTGRES_URL)."
        ),
    )
    def _published() -> Iterator[MaterializeResult]:
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
