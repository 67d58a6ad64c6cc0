"""Where scale-out on Dagster's machinery pays and where it stops, on the production profile
(PostgreSQL catalog and Dagster storage, S3 files, a Redis broker, as `phlo services up --with
workers` runs them):

1. The catalog under concurrent writers: N processes (1, 2, 4, 8) each committing small appends
   to one DuckLake table on PostgreSQL; commits per second in all, as a ratio to one writer.
   Where it stops growing, more writers (workers) only wait for the catalog.
2. A year's backfill (`phlo backfill glucose_entries --submit`, 365 days in runs of
   PHLO_BACKFILL_DAYS_PER_RUN = 31) run by a real dagster-daemon, its steps on 1, 2 and 4 Celery
   worker processes (`phlo worker start`): days per minute, speedup over one worker, and the
   serial fraction Amdahl's law gives for it.
3. The cost of a run through the workers: a 1-day backfill's wall time beside the year's runs'
   mean (31 days each), giving the fixed cost per run and the cost per day.

    .venv/bin/python bench/bench_scaleout.py [--workers 1,2,4] [--writers 1,2,4,8]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.services import control as services
from phlo_core.settings import PhloSettings, load_settings
from phlo_core.workspace import DEFAULT_WORKSPACE
from ratios import Ratios

SECRET = "bench-secret"
BIN = Path(sys.executable).parent
YEAR = ("2024-01-01", "2024-12-30")  # 365 days


def _writer(settings_values: dict[str, str], home: str, commits: int, start: Any) -> None:
    from phlo_core.lakehouse.connect import lakehouse

    settings = load_settings(phlo_home=home, **settings_values)
    with lakehouse(settings) as con:
        start.wait()
        for i in range(commits):
            con.execute("insert into bench.commits values (?, ?)", [os.getpid(), i])


def commits_per_second(values: dict[str, str], root: Path, writers: int, commits: int) -> float:
    from phlo_core.lakehouse.connect import lakehouse

    settings = load_settings(phlo_home=root / "setup", **values)
    with lakehouse(settings) as con:
        con.execute("create schema if not exists bench")
        con.execute("create or replace table bench.commits (writer integer, n integer)")
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    processes = [
        context.Process(
            target=_writer, args=(values, str(root / f"w{i}"), commits, start), daemon=True
        )
        for i in range(writers)
    ]
    for process in processes:
        process.start()
    time.sleep(8)  # every writer connected (spawned, imports done, catalog attached)
    began = time.perf_counter()
    start.set()
    for process in processes:
        process.join()
        assert process.exitcode == 0, f"a writer failed ({process.exitcode})"
    elapsed = time.perf_counter() - began
    with lakehouse(settings) as con:
        [(stored,)] = con.execute("select count(*) from bench.commits").fetchall()
    assert stored == writers * commits, (stored, writers * commits)
    return writers * commits / elapsed


def phlo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(BIN / "phlo"), *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def instance_of(env: dict[str, str]) -> Any:
    from phlo_core.runs.instance import instance_for

    names = PhloSettings.model_fields
    given = {k.lower(): v for k, v in env.items() if k.lower() in names}
    return instance_for(load_settings(**given))


def backfill(env: dict[str, str], first: str, last: str) -> tuple[float, list[float]]:
    """Submit, wait for Dagster to finish it (asked of its storage every 2 s, not through a
    `phlo` process each time: the workers need the cores): wall seconds, and each run's."""
    from dagster import RunsFilter
    from dagster._core.execution.backfill import BulkActionStatus

    before = {b["id"] for b in json.loads(phlo(env, "backfill", "list", "--json").stdout)}
    began = time.perf_counter()
    phlo(env, "backfill", "glucose_entries", "--start-date", first, "--end-date", last, "--submit")
    [backfill_id] = {
        b["id"] for b in json.loads(phlo(env, "backfill", "list", "--json").stdout)
    } - before
    instance = instance_of(env)
    try:
        while True:
            found = instance.get_backfill(backfill_id)
            if found is not None and found.status != BulkActionStatus.REQUESTED:
                break
            time.sleep(2)
        elapsed = time.perf_counter() - began
        assert found.status == BulkActionStatus.COMPLETED_SUCCESS, found.status
        records = instance.get_run_records(RunsFilter(tags={"phlo/backfill": backfill_id}))
        # The runs of days (the whole-table assets run once more at the end, in a run of their
        # own without a partition range).
        return elapsed, [
            r.end_time - r.start_time
            for r in records
            if r.start_time
            and r.end_time
            and r.dagster_run.tags.get("dagster/code_location") == "nightscout"
            and "dagster/asset_partition_range_start" in r.dagster_run.tags
        ]
    finally:
        instance.dispose()


def with_workers(env: dict[str, str], root: Path, count: int, action: Any) -> Any:
    """`action()` with a daemon and `count` workers of one process each running."""
    started = []
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(DEFAULT_WORKSPACE)],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=(root / "daemon.log").open("a"),
        start_new_session=True,
    )
    started.append(daemon)
    try:
        for i in range(count):
            started.append(
                subprocess.Popen(
                    [str(BIN / "phlo"), "worker", "start", "--name", f"bench-{i}"],
                    env={**env, "PHLO_HOME": str(root / f"worker-{i}")},
                    cwd=root,
                    stdout=subprocess.DEVNULL,
                    stderr=(root / f"worker-{i}.log").open("a"),
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 120
        while len(json.loads(phlo(env, "worker", "list", "--json").stdout)) < count:
            assert time.monotonic() < deadline, "workers did not come up"
            time.sleep(2)
        return action()
    finally:
        for process in reversed(started):
            os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--writers", default="1,2,4,8")
    parser.add_argument("--commits", type=int, default=40)
    args = parser.parse_args()
    ratios = Ratios()
    with tempfile.TemporaryDirectory() as tmp, SampleNightscoutServer(api_secret=SECRET) as server:
        root = Path(tmp)
        servers = load_settings(phlo_home=root / "services-home")
        services.up(servers, with_workers=True)
        try:
            profile = services.provision(servers, "catalogbench")
            values = {key.lower(): value for key, value in profile.items()}
            rates = {}
            for writers in (int(n) for n in args.writers.split(",")):
                rates[writers] = commits_per_second(
                    values, root / f"c{writers}", writers, args.commits
                )
            for writers, rate in rates.items():
                ratios.note(f"catalog commits per second, {writers} writer(s)", round(rate, 1))
                if writers != 1:
                    ratios.record(
                        f"{writers} writers' commits", 1 / rate, "1 writer's", 1 / rates[1]
                    )

            years: dict[int, float] = {}
            per_run: list[float] = []
            one_day: float | None = None
            for count in (int(n) for n in args.workers.split(",")):
                profile = services.provision(servers, f"workers{count}")
                home = root / f"home{count}"
                env = {
                    **os.environ,
                    **profile,
                    "PHLO_HOME": str(home),
                    "DAGSTER_HOME": str(home / "dagster"),
                    "NIGHTSCOUT_URL": server.url,
                    "NIGHTSCOUT_API_SECRET": SECRET,
                    "PHLO_RUNS_PER_LOCATION": str(max(count, 1)),
                    "PHLO_MAX_CONCURRENT_RUNS": str(max(count, 1)),
                    "PHLO_BACKFILL_DAYS_PER_RUN": "31",
                }
                phlo(env, "instance")
                home.mkdir(parents=True, exist_ok=True)

                def year(env: dict[str, str] = env) -> tuple[float, list[float]]:
                    return backfill(env, *YEAR)

                elapsed, runs = with_workers(env, home, count, year)
                years[count] = elapsed
                ratios.note(
                    f"a year's backfill on {count} worker(s), days per minute",
                    round(365 / (elapsed / 60), 1),
                )
                if count == 1:
                    per_run = runs

                    def day(env: dict[str, str] = env) -> tuple[float, list[float]]:
                        return backfill(env, "2025-01-01", "2025-01-01")

                    _, [one_day] = with_workers(env, home, 1, day)
            for count, elapsed in years.items():
                if count == 1:
                    continue
                speedup = years[1] / elapsed
                ratios.record(f"a year on {count} workers", elapsed, "on 1 worker", years[1])
                serial = (count / speedup - 1) / (count - 1)
                ratios.note(f"Amdahl serial fraction, from {count} workers", round(serial, 2))
            if per_run and one_day is not None:
                mean_run = statistics.mean(per_run)
                per_day = (mean_run - one_day) / 30
                ratios.note("a 31-day run through the workers, mean", round(mean_run, 1), "s")
                ratios.note("a 1-day run through the workers", round(one_day, 1), "s")
                ratios.note("cost per day in a run (marginal)", round(per_day, 2), "s")
                ratios.note("fixed cost per run", round(one_day - per_day, 1), "s")
        finally:
            services.down(servers)
    ratios.write("scaleout")


if __name__ == "__main__":
    main()
