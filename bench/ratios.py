"""What every benchmark here shares: a median timer and ratios to a baseline measured in the
same run (these machines are noisy; ratios much less so), written to bench/results/."""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `phlo` commands run directly unless a benchmark says otherwise (bench_backfill measures the
# warm server too): each measures what it names, and none leaves a server behind.
os.environ.setdefault("PHLO_SERVER", "0")


def timed(action: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def command(*args: str, env: dict[str, str] | None = None) -> Callable[[], object]:
    def run() -> None:
        subprocess.run(args, check=True, capture_output=True, env={**os.environ, **(env or {})})

    return run


class Ratios:
    """Measurements against their baselines, printed as they come and written at the end."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, float | str]] = {}

    def record(self, name: str, seconds: float, baseline_name: str, baseline: float) -> None:
        self.results[f"{name} vs {baseline_name}"] = {
            "seconds": round(seconds, 3),
            "baseline": baseline_name,
            "baseline_seconds": round(baseline, 3),
            "ratio": round(seconds / baseline, 2),
        }
        print(f"{name:<44} {seconds:7.2f}s  {seconds / baseline:6.2f}x {baseline_name}")

    def note(self, name: str, value: float | str, unit: str = "") -> None:
        """A figure that is not a ratio (memory, counts), kept beside the ratios."""
        self.results[name] = {"value": value, "unit": unit}
        print(f"{name:<44} {value} {unit}")

    def write(self, suffix: str) -> None:
        out = ROOT / "bench" / "results" / f"{dt.date.today().isoformat()}-{suffix}.json"
        document = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "results": self.results}
        out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"written {out.relative_to(ROOT)}")
