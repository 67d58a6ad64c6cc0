"""The warm server for every setting (issue 20): answers and one-day runs through one server
whatever the settings, against Dagster's own CLI and phlo run directly, measured in the same run.

- one day of `dlt_glucose_entries+` (nightscout's eight assets, insights' mart, publishing)
  through the server vs `dagster asset materialize` of the nightscout location's
  `dlt_glucose_entries*` (target <= 0.5x), on a quiet machine and on a busy one (two processes
  spinning on the two cores): the medians of five pairs, each pair one day of each, one after
  the other;
- a settings error (blank NIGHTSCOUT_URL) and an unknown asset, each right after another setting
  changed (target < 1 s), vs the same command run directly;
- the servers left, and their memory, after ten commands with ten different settings (target
  < 500 MB in all);
- `phlo status` from the asset index vs loading every location as it did before (target < 1 s).

    python bench/bench_server.py
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from locations.nightscout.sample_server import SampleNightscoutServer
from ratios import Ratios

BIN = Path(sys.executable).parent
PHLO, DAGSTER = str(BIN / "phlo"), str(BIN / "dagster")
SELECTION = "dlt_glucose_entries+"
PAIRS = 5  # one-day runs on each side, medians compared


def run(args: list[str], env: dict[str, str], expect: int = 0) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return seconds


def servers(env: dict[str, str]) -> list[int]:
    folder = Path(env["XDG_RUNTIME_DIR"]) / f"phlo-{os.getuid()}"
    texts = (lock.read_text().strip() for lock in folder.glob("*.lock"))
    return [int(text) for text in texts if text.isdigit()]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for_server(env: dict[str, str]) -> None:
    deadline = time.monotonic() + 180
    folder = Path(env["XDG_RUNTIME_DIR"]) / f"phlo-{os.getuid()}"
    while not list(folder.glob("*.sock")):
        if time.monotonic() > deadline:
            raise SystemExit(f"no phlo server listened: see its log in {folder}")
        time.sleep(0.2)


@contextlib.contextmanager
def busy(on: bool) -> Iterator[None]:
    """Two processes spinning (one per core) while the block runs, when `on`."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 if on else 0)
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def main() -> None:
    ratios = Ratios()
    with tempfile.TemporaryDirectory() as tmp, SampleNightscoutServer(timezone="UTC") as source:
        (Path(tmp) / "run").mkdir(mode=0o700)
        home = Path(tmp) / "home"
        env = {
            "NIGHTSCOUT_URL": source.url,
            "PHLO_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster"),
            "PHLO_PARTITION_START": "2024-01-01",
            "XDG_RUNTIME_DIR": str(Path(tmp) / "run"),
            "PHLO_SERVER": "1",
        }
        direct = {**env, "PHLO_SERVER": "0"}
        # Warm: the home made, the projects parsed; then the server started and listening.
        run([PHLO, "materialize", SELECTION, "--partition", "2024-01-01"], direct)
        run([PHLO, "materialize", SELECTION, "--partition", "2024-01-02"], env)
        wait_for_server(env)

        day = iter(f"2024-{month:02d}-{d:02d}" for month in (2, 3, 4) for d in range(1, 29))
        for machine in ("quiet", "busy"):
            with busy(machine == "busy"):
                # Pairs, each a baseline then a served day: a VM that slows down or speeds up
                # over the minutes this takes weighs on both sides alike.
                dagster, served = [], []
                for _ in range(PAIRS):
                    dagster.append(
                        run(
                            [DAGSTER, "asset", "materialize"]
                            + ["-m", "locations.nightscout.definitions"]
                            + ["--select", "dlt_glucose_entries*", "--partition", next(day)],
                            direct,
                        )
                    )
                    served.append(
                        run([PHLO, "materialize", SELECTION, "--partition", next(day)], env)
                    )
                ratios.record(
                    f"one day of {SELECTION}, warm server ({machine})",
                    statistics.median(served),
                    f"dagster asset materialize dlt_glucose_entries* ({machine})",
                    statistics.median(dagster),
                )
                ratios.note(
                    f"one-day pairs ({machine}), served/dagster",
                    " ".join(f"{s:.1f}/{d:.1f}" for s, d in zip(served, dagster, strict=True)),
                    "s",
                )

        # Answers right after a setting changed: each command brings settings never seen.
        changed = iter(range(100))

        def other() -> dict[str, str]:
            return {**env, "PHLO_MAX_SHRINK_PCT": str(10 + next(changed))}

        blank = ["materialize", SELECTION, "--partition", "2024-05-01"]
        unknown = ["materialize", "nosuch", "--partition", "2024-05-01"]
        for name, args, extra in (
            ("settings error (blank NIGHTSCOUT_URL)", blank, {"NIGHTSCOUT_URL": ""}),
            ("unknown asset", unknown, {}),
        ):
            warm = statistics.median(
                run([PHLO, *args], {**other(), **extra}, expect=2) for _ in range(3)
            )
            cold = statistics.median(
                run([PHLO, *args], {**other(), **extra, "PHLO_SERVER": "0"}, expect=2)
                for _ in range(3)
            )
            ratios.record(f"{name}, settings just changed, warm", warm, "the same, direct", cold)

        # `phlo status` reads the instance and the asset index, loading no location; before,
        # it loaded every location's definitions (as it still does once the index is stale).
        index = home / "cache" / "assets.json"
        status = [PHLO, "status", "--start-date", "2024-01-01", "--end-date", "2024-04-30"]
        from_index = statistics.median(run(status, direct) for _ in range(5))
        kept = index.read_bytes()
        loading = []
        for _ in range(3):
            index.unlink()
            loading.append(run(status, direct))
        index.write_bytes(kept)
        ratios.record(
            "phlo status, from the asset index",
            from_index,
            "phlo status loading every location",
            statistics.median(loading),
        )

        # Ten commands, ten settings: still one server.
        for _ in range(10):
            run([PHLO, "materialize", SELECTION, "--partition", next(day)], other())
        pids = servers(env)
        ratios.note("servers after 10 commands with 10 settings", len(pids))
        ratios.note("their memory (RSS)", round(sum(rss_mb(pid) for pid in pids)), "MB")
        run([PHLO, "server", "stop"], env)
    ratios.write("server")


if __name__ == "__main__":
    main()
