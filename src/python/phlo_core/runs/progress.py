"""Following a run as it executes: progress events for the terminal, and Ctrl-C.

An event listener (`progress_listener`) reports steps started, assets materialized and steps
failed as the run stores each event. Ctrl-C (SIGINT or SIGTERM) during a run must end it
CANCELED, not FAILURE: another event listener marks the run canceling as soon as an interrupt
fails a step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster import DagsterInstance
    from dagster._core.execution.plan.objects import StepFailureData


class RunInterruptedError(KeyboardInterrupt):
    """Ctrl-C (SIGINT or SIGTERM) stopped a run; the instance records it as CANCELED."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


CANCEL_MESSAGE = "interrupted (Ctrl-C, SIGINT or SIGTERM): canceled"


def by_interrupt(failure: StepFailureData) -> bool:
    """Whether Ctrl-C failed the step: Dagster saw the interrupt itself, or code in the step
    wrapped it (DuckDB turns it into "Query interrupted", phlo into LakehouseError)."""
    from dagster._core.execution.plan.objects import ErrorSource

    if failure.error_source == ErrorSource.INTERRUPT:
        return True
    pending, seen = [failure.error], 0
    while pending and seen < 50:
        error = pending.pop()
        seen += 1
        if error is not None:
            if error.cls_name in ("KeyboardInterrupt", "DagsterExecutionInterruptedError"):
                return True
            pending += [error.cause, error.context]
    return False


def cancel_on_interrupt(instance: DagsterInstance, run_id: str) -> Callable[[object], None]:
    """An event listener (called synchronously as each event is stored): when Ctrl-C fails a
    step, mark the run CANCELING before Dagster finishes it, so that Dagster ends it CANCELED
    instead of FAILURE ("interrupted unexpectedly")."""
    from dagster import DagsterRunStatus

    def listen(entry: object) -> None:
        event = getattr(entry, "dagster_event", None)
        if event is None or not event.is_step_failure or event.step_failure_data is None:
            return
        if by_interrupt(event.step_failure_data):
            run = instance.get_run_by_id(run_id)
            if run is not None and run.status == DagsterRunStatus.STARTED:
                instance.report_run_canceling(run, message=CANCEL_MESSAGE)

    return listen


@contextlib.contextmanager
def signals_noted() -> Iterator[set[int]]:
    """The signals (SIGINT, SIGTERM, ...) that reached this process while the block ran,
    whoever handled them: during a run Dagster replaces the handlers, and a Ctrl-C it turns
    into a failed step (or one that lands between steps) ends the run FAILURE, or even
    SUCCESS, instead of raising; a caller that went on would start its next run. The signal
    numbers come through a wakeup file descriptor (main thread only; elsewhere none noted)."""
    received: set[int] = set()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    try:
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except ValueError:
        os.close(read)
        os.close(write)
        yield received
        return
    try:
        yield received
    finally:
        signal.set_wakeup_fd(previous)
        with contextlib.suppress(OSError):
            received.update(os.read(read, 4096))
        os.close(read)
        os.close(write)


def mark_canceled(instance: DagsterInstance, run_id: str) -> None:
    """For an interrupt Dagster never saw (before or after its own interrupt handling)."""
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        instance.report_run_canceled(run, message=CANCEL_MESSAGE)


@dataclass(frozen=True)
class Progress:
    """Something that happened in a run: a step started or failed, an asset materialized."""

    kind: str  # step_start | materialized | step_failure | step_interrupted | warning
    subject: str
    partition: str | None = None
    message: str = ""  # a warning's line (a retry: its attempt, wait and reason)


ProgressCallback = Callable[[Progress], None]


def progress_listener(callback: ProgressCallback) -> Callable[[object], None]:
    """An event listener (called synchronously as each event of the run is stored) that turns
    the run's events into progress: nothing is read back from the event log (polling it cost a
    day's run 0.2-0.5 s of queries and deserialization, beside the run). Showing progress never
    fails the run: once the callback raises (its output closed), it is called no more."""
    broken = False

    def listen(entry: object) -> None:
        nonlocal broken
        if broken:
            return
        try:
            progress = _progress_of(entry)
            if progress is not None:
                callback(progress)
        except Exception:
            broken = True

    return listen


def _progress_of(entry: object) -> Progress | None:
    event = getattr(entry, "dagster_event", None)
    if event is None:
        level = getattr(entry, "level", 0)
        if not isinstance(level, int):  # Dagster stores a name or a number
            level = logging.getLevelNamesMapping().get(str(level).upper(), 0)
        if level >= logging.WARNING:  # a retry's wait is not silent
            subject = getattr(entry, "step_key", None) or "-"
            return Progress("warning", subject, message=getattr(entry, "user_message", ""))
        return None
    kind = event.event_type_value
    if kind == "STEP_START":
        return Progress("step_start", event.step_key or "?")
    if kind == "ASSET_MATERIALIZATION" and event.asset_key is not None:
        return Progress("materialized", event.asset_key.to_user_string(), event.partition)
    if kind == "STEP_FAILURE":
        failure = event.step_failure_data
        interrupted = failure is not None and by_interrupt(failure)
        kind = "step_interrupted" if interrupted else "step_failure"
        return Progress(kind, event.step_key or "?")
    return None
