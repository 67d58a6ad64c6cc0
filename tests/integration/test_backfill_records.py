"""Backfill records in the Dagster instance's key-value store."""

from __future__ import annotations

import threading
from collections.abc import Callable

from phlo_core.backfill.records import Backfill, all_ids, load, new_id, recorded, save
from phlo_core.runs.instance import instance_for
from phlo_core.settings import PhloSettings


def test_backfills_saved_at_once_are_all_in_the_index(
    make_settings: Callable[..., PhloSettings],
) -> None:
    """Eight backfills recorded at the same moment: none is lost (an index read, extended and
    written back kept one of them), the latest is the one created last, and reading the records
    without Dagster finds the same."""
    settings = make_settings()
    instance = instance_for(settings)
    # Ids of one second sort by their random part: the latest is the one created last.
    backfills = [
        Backfill(f"{new_id()}{9 - n}", "a+", ["2024-01-01"], 31, 1, 1000.0 + n, 0) for n in range(8)
    ]
    start = threading.Barrier(len(backfills))

    def record(backfill: Backfill) -> None:
        start.wait()
        save(instance, backfill)

    threads = [threading.Thread(target=record, args=(b,)) for b in backfills]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all_ids(instance) == sorted(b.id for b in backfills)
    latest = load(instance)
    assert latest is not None and latest.id == backfills[-1].id
    found = recorded(settings)
    assert found is not None and [b.id for b in found] == [b.id for b in backfills]
