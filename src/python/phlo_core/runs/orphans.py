"""Runs whose process is gone: a run killed with its process stays STARTED in Dagster forever.

Every run phlo starts carries its process's identity as tags (host, pid namespace, pid and the
pid's start time, so a recycled pid is not mistaken for the run's process); runs launched
another way (the UI, a schedule) get them when their first Phlo asset starts (`claim_run`).
Before phlo starts runs, it marks the runs of this host and pid namespace whose process no
longer exists as failed, with the reason. Containers on the host's network share its host name
but not its pids: a run in another container (or one tagged before namespaces were) is never
judged from here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster import DagsterInstance

HOST_TAG = "phlo/host"
PID_TAG = "phlo/pid"
PROCESS_START_TAG = "phlo/process_start"
PID_NAMESPACE_TAG = "phlo/pid_namespace"


def _pid_namespace() -> str:
    """This process's pid namespace, as its inode number ("" where /proc cannot say)."""
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:
        return ""


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[19] if len(fields) > 19 else None


def process_tags() -> dict[str, str]:
    """Tags identifying this process, for the runs it executes."""
    return {
        HOST_TAG: socket.gethostname(),
        PID_NAMESPACE_TAG: _pid_namespace(),
        PID_TAG: str(os.getpid()),
        PROCESS_START_TAG: _process_start(os.getpid()) or "",
    }


def claim_run(instance: DagsterInstance, run_id: str, tags: Mapping[str, str]) -> None:
    """Tag a run with the identity of the process executing it, unless it already has it."""
    mine = process_tags()
    if any(tags.get(tag) != mine[tag] for tag in (PID_TAG, HOST_TAG, PID_NAMESPACE_TAG)):
        instance.add_run_tags(run_id, mine)


def _alive(pid: int, started: str) -> bool:
    """Whether the run's process still runs. Where /proc cannot tell (not Linux), assume it
    does: a live run must never be marked failed."""
    if not os.path.exists("/proc/self/stat"):
        return True
    current = _process_start(pid)
    return current is not None and (not started or current == started)


def process_gone(tags: Mapping[str, str]) -> bool:
    """Whether the process a run's tags name ran on this host, in this pid namespace, and no
    longer runs."""
    pid_text = tags.get(PID_TAG, "")
    namespace = _pid_namespace()
    return (
        tags.get(HOST_TAG) == socket.gethostname()
        and bool(namespace)
        and tags.get(PID_NAMESPACE_TAG) == namespace
        and pid_text.isdigit()
        and not _alive(int(pid_text), tags.get(PROCESS_START_TAG, ""))
    )


def fail_orphaned_runs(instance: DagsterInstance) -> list[str]:
    """Mark the started runs of this host and pid namespace whose process is gone as failed;
    return their ids."""
    from dagster import DagsterRunStatus, RunsFilter

    host, namespace = socket.gethostname(), _pid_namespace()
    if not namespace:
        return []
    records = instance.get_run_records(
        RunsFilter(
            statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED],
            tags={HOST_TAG: host, PID_NAMESPACE_TAG: namespace},
        )
    )
    failed = []
    for record in records:
        run = record.dagster_run
        if not process_gone(run.tags):
            continue
        pid_text = run.tags[PID_TAG]
        instance.report_run_failed(
            run,
            message=(
                f"the process running it (pid {pid_text} on {host}) is gone: it was killed or "
                "crashed before the run finished; run its days again to complete them"
            ),
        )
        failed.append(run.run_id)
    return failed
