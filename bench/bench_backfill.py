"""`phlo backfill` of a year against the original tool's way, one process per day.

One year (366 days) of 5-minute CGM data from a local Nightscout-compatible server through
every layer on the embedded default, warm (the dbt project parsed, the instance created, as
after a first `phlo materialize`). In the same run, the way the tool this project replaces
worked: one `dagster asset materialize --partition D` process per day, timed over a few days
and extrapolated to the year. Also `--parallel 1` against `--parallel 2`, the peak memory of
the whole process tree, and one day with `phlo materialize` against `dagster asset
materialize` of the same assets, with phlo run directly (PHLO_SERVER=0) and through its warm
server (the default after a first command). Results: bench/results/<date>-backfill.json.

    .venv/bin/python bench/bench_backfill.py [--per-day-samples 5] [--year 2024]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from locations.nightscout.sample_server import SampleNightscoutServer
from ratios import Ratios

BIN = Path(sys.executable).parent
PHLO = str(BIN / "phlo")
DAGSTER = str(BIN / "dagster")
SELECTION = "dlt_glucose_entries+"


def tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants, in MB (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, grown = {root}, True
    while grown:
        grown = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grown = True
    return sum(rss.get(pid, 0) for pid in tree) / 2**20


def run_measured(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB) of the command's whole process tree."""
    started = time.perf_counter()
    process = subprocess.Popen(
        args, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_mb(process.pid))
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{output.decode()[-3000:]}")
    return seconds, peak


def same_selection(home: Path) -> str:
    """The assets `dagster asset materialize -m locations.nightscout.definitions --select
    'dlt_glucose_entries*'` runs (one location: the Dagster CLI loads one), as a phlo
    selection; `dlt_glucose_entries+` would add the insights location's mart."""
    from dagster import AssetKey, AssetSelection

    from locations.nightscout.definitions import build_definitions
    from phlo_core.settings import load_settings

    graph = build_definitions(load_settings(phlo_home=home)).resolve_asset_graph()
    keys = AssetSelection.assets(AssetKey("dlt_glucose_entries")).downstream().resolve(graph)
    return ",".join(sorted(key.to_user_string() for key in keys))


def wait_for_server(env: dict[str, str]) -> None:
    """Until the phlo server the last command started listens (it warms up in the background)."""
    folder = Path(env["XDG_RUNTIME_DIR"]) / f"phlo-{os.getuid()}"
    deadline = time.monotonic() + 120
    while not list(folder.glob("*.sock")):
        if time.monotonic() > deadline:
            raise SystemExit("the phlo server did not start: see its log in " + str(folder))
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-day-samples", type=int, default=5)
    parser.add_argument("--year", type=int, default=2024)
    args = parser.parse_args()
    first, last = f"{args.year}-01-01", f"{args.year}-12-31"
    ratios = Ratios()
    with tempfile.TemporaryDirectory() as tmp, SampleNightscoutServer(timezone="UTC") as server:
        env = {
            "NIGHTSCOUT_URL": server.url,
            "PHLO_PARTITION_START": f"{args.year - 1}-12-01",
            "PHLO_SERVER": "0",  # direct unless said otherwise: the process tree is the command's
            "XDG_RUNTIME_DIR": str(Path(tmp) / "run"),  # this bench's phlo servers
        }
        (Path(tmp) / "run").mkdir(mode=0o700)

        def fresh(name: str, served: bool = False) -> dict[str, str]:
            """A new home, warm: the instance created, the dbt projects parsed, the asset index
            written, as after a first `phlo materialize` there (dbt's saved parse state names
            the home's paths, so a copied home would parse again). `served`: with the phlo
            server on, and that first command having started it."""
            home = Path(tmp) / name
            home_env = {**env, "PHLO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
            if served:
                home_env["PHLO_SERVER"] = "1"
            warm_up = [PHLO, "materialize", SELECTION, "--partition", f"{args.year - 1}-12-01"]
            subprocess.run(warm_up, env={**os.environ, **home_env}, check=True, capture_output=True)
            if served:
                wait_for_server(home_env)
            return home_env

        year = [PHLO, "backfill", "glucose_entries", "--start-date", first, "--end-date", last]
        results = {}
        for parallel in (1, 2):
            seconds, peak = run_measured(
                [*year, "--parallel", str(parallel)], fresh(f"p{parallel}")
            )
            results[parallel] = seconds
            ratios.note(f"year, --parallel {parallel}: wall", round(seconds, 1), "s")
            ratios.note(f"year, --parallel {parallel}: peak RSS (process tree)", round(peak), "MB")
        ratios.record("year, --parallel 2", results[2], "year, --parallel 1", results[1])
        served_year, _ = run_measured([*year, "--parallel", "2"], fresh("p2-served", served=True))
        ratios.note(
            "year, --parallel 2, through a warm phlo server: wall", round(served_year, 1), "s"
        )

        # The original way: one `dagster asset materialize` process per day.
        per_day_env = fresh("per-day")
        days = [f"{args.year - 1}-12-{day:02d}" for day in range(2, 2 + args.per_day_samples)]
        samples = [
            run_measured(
                [
                    DAGSTER,
                    "asset",
                    "materialize",
                    "-m",
                    "locations.nightscout.definitions",
                    "--select",
                    "dlt_glucose_entries*",
                    "--partition",
                    day,
                ],
                per_day_env,
            )[0]
            for day in days
        ]
        per_day = statistics.median(samples)
        ratios.note("dagster asset materialize, one day (median)", round(per_day, 2), "s")
        best = min(results.values())
        ratios.record(
            "year, phlo backfill (best parallel)", best, "366 x one-day process", 366 * per_day
        )

        # One day, the same assets both ways: phlo directly, then through its warm server.
        same = same_selection(Path(tmp) / "selection")
        later = [f"{args.year - 1}-12-{day:02d}" for day in range(20, 23)]
        direct = [
            run_measured([PHLO, "materialize", same, "--partition", day], per_day_env)[0]
            for day in later[:2]
        ]
        ratios.record(
            "phlo materialize, one day, direct (PHLO_SERVER=0)",
            statistics.median(direct),
            "dagster asset materialize, one day",
            per_day,
        )
        served_env = {**per_day_env, "PHLO_SERVER": "1"}
        starting, _ = run_measured(
            [PHLO, "materialize", same, "--partition", f"{args.year - 1}-12-25"], served_env
        )
        ratios.note(
            "phlo materialize, one day, first call (starts the server)", round(starting, 2), "s"
        )
        wait_for_server(served_env)
        one_day = [
            run_measured([PHLO, "materialize", same, "--partition", day], served_env)[0]
            for day in [f"{args.year - 1}-12-{day:02d}" for day in range(26, 29)]
        ]
        ratios.record(
            "phlo materialize, one day (warm server)",
            statistics.median(one_day),
            "dagster asset materialize, one day",
            per_day,
        )
        subprocess.run([PHLO, "server", "stop"], env={**os.environ, **env}, check=False)
    ratios.write("backfill")


if __name__ == "__main__":
    main()
