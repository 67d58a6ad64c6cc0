"""A backfill handed to Dagster's daemon (`phlo backfill --submit`): an asset backfill in the
instance over the days still to do, which the daemon turns into runs on the configured launcher."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phlo_core.backfill.plan import Plan
from phlo_core.backfill.records import Backfill, save
from phlo_core.settings import PhloSettings

if TYPE_CHECKING:
    from dagster import DagsterInstance


def daemon_running(instance: DagsterInstance, within_seconds: float = 120.0) -> bool:
    """Whether a dagster-daemon's backfill loop has reported in lately on this instance."""
    heartbeat = instance.get_daemon_heartbeats().get("BACKFILL")
    return heartbeat is not None and time.time() - heartbeat.timestamp < within_seconds


@dataclass
class Submitted:
    asset_backfill_id: str
    # Not handed over: assets rebuilt whole in a second code location (see `submit`), and those
    # that would materialize nothing for want of a setting.
    left_out: list[str]


def submit(plan: Plan, settings: PhloSettings) -> Submitted:
    """Hand what is left of the plan to Dagster: an asset backfill in the instance over the
    days still to do, which Dagster's daemon turns into runs (through the assets' backfill
    policy, on the configured run launcher) and shows on the UI's backfills page. Assets rebuilt
    whole run once after the days they read, as Dagster orders them, those of one code
    location only (the others are named in the result: materialize them afterwards). The asset
    backfill's id is the backfill's own the first time."""
    from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
    from dagster._core.execution.backfill import PartitionBackfill

    from phlo_core.needs import NEEDS_TAG, missing, needs_met
    from phlo_core.runs.instance import instance_for
    from phlo_core.runs.selection import plan_selection

    backfill = plan.backfill
    plans = plan_selection(backfill.selection, settings)
    definitions, keys, left_out = {}, [], []
    whole_from: str | None = None
    for location in plans:
        graph = location.definitions.resolve_asset_graph()
        for key in location.keys:
            needed = graph.get(key).tags.get(NEEDS_TAG)
            if needed and not needs_met(settings, needed):
                # It would end without a materialization, which Dagster counts as failed.
                left_out.append(f"{key.to_user_string()} ({missing(needed)})")
            elif graph.get(key).partitions_def is not None:
                keys.append(key)
            elif whole_from in (None, location.location.name):
                # Dagster 1.13 puts the unpartitioned assets an asset backfill reaches at the
                # same time in one run, whichever code location each is in, and that run
                # cannot be made: only one location's go to the daemon.
                whole_from = location.location.name
                keys.append(key)
            else:
                left_out.append(key.to_user_string())
        for assets in graph.assets_defs:
            if assets.is_materializable:  # another location's assets are that one's to build
                definitions[id(assets)] = assets
    instance = instance_for(settings)
    asset_id = backfill.id if not backfill.submitted else f"{backfill.id}.{len(backfill.submitted)}"
    request = PartitionBackfill.from_asset_partitions(
        backfill_id=asset_id,
        asset_graph=AssetGraph.from_assets(list(definitions.values())),
        partition_names=[day.isoformat() for day in plan.todo],
        asset_selection=keys,
        backfill_timestamp=time.time(),
        tags={"phlo/backfill": backfill.id},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=f"phlo backfill {backfill.selection}",
        description=f"phlo backfill {backfill.id}: {len(plan.todo)} day(s)",
        run_config=None,
    )
    instance.add_backfill(request)
    backfill.submitted.append(asset_id)
    save(instance, backfill)
    return Submitted(asset_id, sorted(left_out))


def submitted_state(instance: DagsterInstance, backfill: Backfill) -> str | None:
    """The latest asset backfill's status in Dagster (requested, completed_success...), for a
    backfill handed to the daemon."""
    if not backfill.submitted:
        return None
    found = instance.get_backfill(backfill.submitted[-1])
    return found.status.value.lower() if found is not None else "unknown"
