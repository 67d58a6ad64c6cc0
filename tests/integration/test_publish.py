"""Publishing marts to PostgreSQL while dashboards use them: their views and grants on a published
mart survive every republish and show the new rows, readers in other connections see the old or
the new complete mart and nothing in between, staging tables of a killed publish are removed by
the next one, and a mart whose columns change either carries its dashboards along or says in one
line which view stands in the way.

Real servers (`production_profile` in conftest: PostgreSQL and S3, a fresh profile per test). The
lake's mart is written here directly, so that each test decides what a republish brings.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from phlo_core.lakehouse.connect import lakehouse
from phlo_core.lakehouse.publish import PublishError, publish
from phlo_core.settings import PhloSettings, load_settings

MART = "mrt_daily"
# A role that exists on every PostgreSQL and that the marts' owner may grant to without being
# a superuser: the dashboards' reader role of these tests.
READER = "pg_monitor"
STAGING = r"^_phlo_stage_|__phlo_[0-9a-f]{8}$"  # this version's and the earlier one's names


def pg(url: str, statement: str, params: list[Any] | None = None) -> list[tuple]:
    import psycopg2

    con = psycopg2.connect(url)
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        con.close()


def rows_sql(count: int, *, scale: int = 1) -> str:
    """A mart of `count` days: its total of readings tells versions apart."""
    return (
        f"select date '2024-01-01' + i::integer as day, (i % 288 + 1) * {scale} as readings, "
        f"100.0 + i % 50 as mean_mg_dl, 'v' || i as note from range({count}) t(i)"
    )


def write_mart(settings: PhloSettings, select: str) -> None:
    with lakehouse(settings) as con:
        con.execute(f"create or replace table marts.{MART} as {select}")


def stats(url: str, relation: str = f"marts.{MART}") -> tuple[int, int | None]:
    [(count, total)] = pg(url, f"select count(*), sum(readings)::bigint from {relation}")
    return count, total


def grants(url: str) -> list[tuple]:
    return pg(url, "select relacl::text from pg_class where oid = %s::regclass", [f"marts.{MART}"])


def expected_stats(count: int, *, scale: int = 1) -> tuple[int, int]:
    return count, sum((i % 288 + 1) * scale for i in range(count))


def staging_left(url: str) -> list[str]:
    return [
        name
        for (name,) in pg(
            url,
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname not in ('pg_catalog', 'information_schema') and c.relname ~ %s",
            [STAGING],
        )
    ]


Lake = tuple[PhloSettings, dict[str, str], str]


@pytest.fixture
def lake(production_profile: Callable[[], dict[str, str]], tmp_path: Path) -> Lake:
    """A fresh production profile with a `marts` layer the tests fill themselves."""
    profile = production_profile()
    home = tmp_path / "home"
    settings = load_settings(phlo_home=home, **{k.lower(): v for k, v in profile.items()})
    return settings, {**profile, "PHLO_HOME": str(home)}, profile["PHLO_PUBLISH_POSTGRES_URL"]


def test_a_republish_keeps_a_dashboards_view_and_grant_and_shows_them_the_new_rows(
    lake: Lake,
) -> None:
    settings, _, url = lake
    write_mart(settings, rows_sql(3))
    assert publish([MART], settings) == {MART: 3}
    pg(url, "create schema dash")
    pg(url, f"create view dash.daily as select day, readings from marts.{MART}")
    pg(url, f"grant usage on schema marts, dash to {READER}")
    pg(url, f"grant select on marts.{MART}, dash.daily to {READER}")
    granted = grants(url)

    write_mart(settings, rows_sql(5, scale=2))
    assert publish([MART], settings) == {MART: 5}  # before: "other objects depend on it"
    assert stats(url, "dash.daily") == expected_stats(5, scale=2)
    assert stats(url) == expected_stats(5, scale=2)
    assert grants(url) == granted and READER in str(granted)
    assert pg(
        url,
        "select has_table_privilege(%s, %s, 'select'), has_table_privilege(%s, 'dash.daily', "
        "'select')",
        [READER, f"marts.{MART}", READER],
    ) == [(True, True)]
    assert staging_left(url) == []


def test_readers_see_the_old_or_the_new_complete_mart_while_it_is_republished(
    lake: Lake,
) -> None:
    """Readers poll count(*) and the total in their own connections, each statement on its own
    and inside repeatable-read transactions (a report's several queries on one snapshot), while
    two publishers at a time republish a mart whose size changes every round."""
    import psycopg2

    settings, _, url = lake
    sizes = {0: 3000, 1: 5000}
    versions = {expected_stats(n) for n in sizes.values()}
    write_mart(settings, rows_sql(sizes[0]))
    publish([MART], settings)
    pg(url, "create table public.other (x int)")  # what a report reads before the mart
    seen: list[tuple[int, int | None]] = []
    failures: list[str] = []
    stop = threading.Event()

    def read(repeatable: bool) -> None:
        con = psycopg2.connect(url)
        if repeatable:
            con.set_session(isolation_level="REPEATABLE READ")
        else:
            con.autocommit = True
        try:
            while not stop.is_set():
                try:
                    with con.cursor() as cur:
                        if repeatable:  # the snapshot is taken here...
                            cur.execute("select count(*) from public.other")
                            time.sleep(random.uniform(0.0, 0.3))
                        cur.execute(f"select count(*), sum(readings)::bigint from marts.{MART}")
                        [(count, total)] = cur.fetchall()  # ...and the mart read on it
                        seen.append((count, total))
                    if repeatable:
                        con.commit()
                except psycopg2.Error as exc:
                    failures.append(str(exc).strip())
                    con.rollback()
        finally:
            con.close()

    readers = [threading.Thread(target=read, args=(kind,)) for kind in (False, True, True, True)]
    for reader in readers:
        reader.start()
    errors: list[BaseException] = []

    def publisher() -> None:
        try:
            publish([MART], settings)
        except BaseException as exc:
            errors.append(exc)

    try:
        for round_ in range(1, 9):
            write_mart(settings, rows_sql(sizes[round_ % 2]))
            publishers = [threading.Thread(target=publisher) for _ in range(2)]
            for thread in publishers:
                thread.start()
            for thread in publishers:
                thread.join()
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert errors == []
    assert failures == []
    assert len(seen) > 16
    assert set(seen) == versions, set(seen) - versions  # never empty or partial; both shown
    assert stats(url) == expected_stats(sizes[0])  # round 8 wrote sizes[0]
    assert staging_left(url) == []


def test_staging_tables_of_a_killed_publish_are_dropped_by_the_next_publish(lake: Lake) -> None:
    """A real publish, killed with -9 after it staged its copy (held up by a reader's lock on
    the mart), and a staging table as the previous version of phlo left them."""
    import psycopg2

    settings, env, url = lake
    write_mart(settings, rows_sql(10))
    publish([MART], settings)
    write_mart(settings, rows_sql(20))

    blocker = psycopg2.connect(url)
    try:
        with blocker.cursor() as cur:
            cur.execute(f"lock table marts.{MART} in access exclusive mode")
        victim = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from phlo_core.lakehouse.publish import publish; from phlo_core.settings import "
                f"load_settings; publish([{MART!r}], load_settings())",
            ],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # The victim has staged and waits for the mart: kill it there.
        deadline = time.monotonic() + 120
        while not pg(
            url,
            "select 1 from pg_locks where not granted and relation = %s::regclass",
            [f"marts.{MART}"],
        ):
            assert victim.poll() is None, victim.communicate()
            assert time.monotonic() < deadline, "the publish never reached the swap"
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        blocker.rollback()
        blocker.close()
    pg(url, f"create table marts.{MART}__phlo_0badf00d as select * from marts.{MART}")
    stale = staging_left(url)
    assert f"{MART}__phlo_0badf00d" in stale and len(stale) >= 2, stale
    assert stats(url) == expected_stats(10)  # the killed publish changed nothing

    assert publish([MART], settings) == {MART: 20}
    assert staging_left(url) == []
    assert stats(url) == expected_stats(20)


def test_columns_follow_the_mart_and_a_view_on_a_changed_column_is_named(lake: Lake) -> None:
    settings, _, url = lake
    write_mart(settings, rows_sql(4))
    publish([MART], settings)
    pg(url, f"create view public.daily_readings as select day, readings from marts.{MART}")
    pg(url, f"grant select on marts.{MART} to {READER}")

    def columns() -> list[tuple[str, str]]:
        return pg(
            url,
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'marts' and table_name = %s order by ordinal_position",
            [MART],
        )

    # A column added, one no view uses removed: both follow, the view goes on.
    write_mart(
        settings,
        f"select day, readings, mean_mg_dl, readings * 2 as p95 from ({rows_sql(6)})",
    )
    assert publish([MART], settings) == {MART: 6}
    assert columns() == [
        ("day", "date"),
        ("readings", "bigint"),
        ("mean_mg_dl", "numeric"),
        ("p95", "bigint"),
    ]
    assert pg(url, f"select sum(p95) from marts.{MART}") == [(2 * expected_stats(6)[1],)]
    assert stats(url, "public.daily_readings") == expected_stats(6)
    assert pg(url, "select has_table_privilege(%s, %s, 'select')", [READER, f"marts.{MART}"]) == [
        (True,)
    ]

    # A column the view uses retyped, or removed: one line naming both, nothing published.
    for changed in (
        f"select day, readings::double as readings, mean_mg_dl, readings * 2 as p95 "
        f"from ({rows_sql(7)})",
        f"select day, mean_mg_dl, readings * 2 as p95 from ({rows_sql(7)})",
    ):
        write_mart(settings, changed)
        with pytest.raises(PublishError) as raised:
            publish([MART], settings)
        message = str(raised.value)
        assert "\n" not in message
        assert "column readings" in message and "view public.daily_readings" in message, message
        assert "drop" in message and "nothing published" in message, message
        assert stats(url, "public.daily_readings") == expected_stats(6)
        assert staging_left(url) == []

    # Without the view in the way the retyped column is published.
    pg(url, "drop view public.daily_readings")
    write_mart(
        settings,
        f"select day, readings::double as readings, readings * 2 as p95 from ({rows_sql(7)})",
    )
    assert publish([MART], settings) == {MART: 7}
    assert columns() == [("day", "date"), ("readings", "double precision"), ("p95", "bigint")]
    assert stats(url) == expected_stats(7)
