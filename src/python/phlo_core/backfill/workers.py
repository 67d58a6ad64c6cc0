"""Running a backfill: one in-process run per range and code location, in this process or in
worker processes that each run a share of the ranges and report each range as a JSON line;
the assets rebuilt whole run once at the end."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Literal, Protocol

from phlo_core.backfill.plan import Plan
from phlo_core.backfill.records import BACKFILL_TAG, Backfill, load
from phlo_core.calendar import DayRange
from phlo_core.settings import PhloSettings

PARENT_PID = "PHLO_BACKFILL_PARENT_PID"  # a worker's parent, for it to die with


@dataclass
class RangeResult:
    days: DayRange
    success: bool
    seconds: float
    errors: list[str]
    whole: bool = False  # the final run of the assets rebuilt whole, not a range of days

    def to_json(self) -> str:
        return json.dumps(
            {
                "start": self.days.start.isoformat(),
                "end": self.days.end.isoformat(),
                "success": self.success,
                "seconds": self.seconds,
                "errors": self.errors,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RangeResult:
        data = json.loads(text)
        days = DayRange(dt.date.fromisoformat(data["start"]), dt.date.fromisoformat(data["end"]))
        return cls(days, data["success"], data["seconds"], data["errors"])


def run_range(
    backfill: Backfill,
    days: DayRange,
    settings: PhloSettings,
    part: Literal["daily", "whole"] = "daily",
) -> RangeResult:
    """One range as one in-process run per location, tagged with the backfill."""
    from phlo_core.runs.engine import materialize

    started = time.perf_counter()
    outcomes = materialize(
        backfill.selection,
        days,
        settings,
        log_level="CRITICAL",
        allow_shrink=backfill.allow_shrink,
        extra_tags={BACKFILL_TAG: backfill.id},
        part=part,
    )
    return RangeResult(
        days,
        all(o.success for o in outcomes),
        time.perf_counter() - started,
        [f"{o.location}: {error}" for o in outcomes for error in o.errors],
        whole=part == "whole",
    )


def _caused_by_interrupt(exc: BaseException) -> bool:
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, KeyboardInterrupt) or "Interrupt" in type(error).__name__:
            return True
        pending += [error.__cause__, error.__context__]
    return False


def run_range_reported(backfill: Backfill, days: DayRange, settings: PhloSettings) -> RangeResult:
    """`run_range`, with an error that stops it (a server gone, say) as the range's failure:
    the next range still runs. Ctrl-C passes through."""
    try:
        return run_range(backfill, days, settings)
    except Exception as exc:
        from phlo_core.redact import redact

        if _caused_by_interrupt(exc):
            raise KeyboardInterrupt from None  # Ctrl-C that code wrapped (DuckDB, say)

        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        return RangeResult(days, False, 0.0, [redact(lines[0])])


def worker_environment(settings: PhloSettings) -> dict[str, str]:
    """The settings as environment variables, for a worker process to read them back."""
    from pydantic import SecretStr

    values = {**settings.model_dump(), **settings.location_values}
    env = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[name.upper()] = value.isoformat() if isinstance(value, dt.date) else str(value)
    return env


class WorkerProcess(Protocol):
    """What `run_in_workers` uses of a worker: `subprocess.Popen`'s face."""

    @property
    def pid(self) -> int: ...

    @property
    def stdout(self) -> IO[str] | None: ...

    @property
    def returncode(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


# Starts `python -m phlo_core.backfill.workers ARGS` with ENV, its stdout a pipe of JSON lines.
WorkerStarter = Callable[[list[str], dict[str, str]], WorkerProcess]


def start_worker_process(args: list[str], env: dict[str, str]) -> WorkerProcess:
    """A worker as a new Python process; the kernel kills it if this process dies."""
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "phlo_core.backfill.workers", *args],
        env={**env, PARENT_PID: str(os.getpid())},
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


def run_in_workers(
    backfill: Backfill,
    todo: Sequence[DayRange],
    settings: PhloSettings,
    workers: int,
    on_range: Callable[[RangeResult], None],
    start_worker: WorkerStarter | None = None,
) -> list[RangeResult]:
    """`workers` at once: this process and `workers - 1` worker processes, each running its
    share of the ranges in turn (round robin, so that every one starts on an early range);
    results as they come. This process has Dagster and the locations loaded already, so it
    takes a share itself rather than idle beside a worker that loads them again.
    `start_worker` starts each worker: a new process by default; the phlo server forks them
    with everything loaded when it runs the backfill."""
    import subprocess
    import threading

    env = {**os.environ, **worker_environment(settings)}
    start_worker = start_worker or start_worker_process
    shares = [list(todo[i::workers]) for i in range(workers)]
    results: list[RangeResult] = []
    lock = threading.Lock()

    def report(result: RangeResult) -> None:
        with lock:
            results.append(result)
            on_range(result)

    processes = []
    for share in shares[1:]:
        if not share:
            continue
        args = [backfill.id, *(f"{r.start.isoformat()}..{r.end.isoformat()}" for r in share)]
        processes.append(start_worker(args, env))

    def collect(process: WorkerProcess) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("{"):
                report(RangeResult.from_json(line))

    readers = [threading.Thread(target=collect, args=(p,), daemon=True) for p in processes]
    for reader in readers:
        reader.start()
    try:
        for days in shares[0]:
            report(run_range_reported(backfill, days, settings))
        for process in processes:
            process.wait()
        for reader in readers:
            reader.join(timeout=30)
    except KeyboardInterrupt:
        # The workers got the same Ctrl-C (one process group): let them cancel their runs.
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        raise
    # A worker that died (killed for memory, failed to start) reported none of its ranges or
    # only some: those are failures, not silently missing.
    reported = {(r.days.start, r.days.end) for r in results}
    for process, share in zip(processes, [s for s in shares[1:] if s], strict=True):
        for days in share:
            if (days.start, days.end) not in reported:
                report(
                    RangeResult(
                        days, False, 0.0, [f"worker process ended (exit code {process.returncode})"]
                    )
                )
    return results


def execute(
    plan: Plan,
    settings: PhloSettings,
    on_range: Callable[[RangeResult], None],
    start_worker: WorkerStarter | None = None,
) -> list[RangeResult]:
    """Run the plan's ranges (in this process, or in `parallel` workers), then, when every
    range succeeded, the assets rebuilt whole once over everything."""
    backfill = plan.backfill
    workers = min(backfill.parallel, len(plan.ranges))
    if workers > 1:
        results = run_in_workers(backfill, plan.ranges, settings, workers, on_range, start_worker)
    else:
        results = []
        for days in plan.ranges:
            result = run_range_reported(backfill, days, settings)
            results.append(result)
            on_range(result)
    if plan.has_whole and all(result.success for result in results):
        dates = backfill.dates
        whole = DayRange(dates[0], dates[-1] + dt.timedelta(days=1))
        result = run_range(backfill, whole, settings, part="whole")
        results.append(result)
        on_range(result)
    return results


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when the process that started it dies (Linux's
    PR_SET_PDEATHSIG): a backfill killed with SIGKILL leaves no worker running on its own,
    writing days a `--resume` would run again. Elsewhere: nothing."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the line above
        os._exit(137)


def worker_main(argv: list[str]) -> int:
    """`python -m phlo_core.backfill.workers ID START..END ...`: run ranges, one JSON line each."""

    parent = os.environ.get(PARENT_PID)
    if parent and parent.isdigit():
        _die_with_parent(int(parent))
    from phlo_core.runs.instance import instance_for
    from phlo_core.settings import get_settings

    settings = get_settings()
    backfill = load(instance_for(settings), argv[0])
    if backfill is None:
        return 2
    for text in argv[1:]:
        start, _, end = text.partition("..")
        days = DayRange(dt.date.fromisoformat(start), dt.date.fromisoformat(end))
        try:
            result = run_range_reported(backfill, days, settings)
        except KeyboardInterrupt:
            return 130
        print(result.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    import sys

    from phlo_core.process_exit import exit_now

    exit_now(worker_main(sys.argv[1:]))  # no interpreter teardown (1.4 s after a run)
