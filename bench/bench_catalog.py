"""`phlo catalog sync` for the three projects on the demo's home, warm (DataHub's environment
made, the projects parsed; target < 10 s), against `phlo docs` (dbt's documentation of the same
projects: the other way phlo describes every model and column), and `phlo catalog show` (target
< 1 s) against `phlo query` of one row (a command start and a read-only attach), measured in the
same run.

    .venv/bin/python bench/bench_catalog.py [--repeat 3]

Results go to bench/results/<date>-catalog.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ratios import Ratios, command, timed

BIN = Path(sys.executable).parent
PHLO = str(BIN / "phlo")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ratios = Ratios()
    with tempfile.TemporaryDirectory() as tmp:
        command(PHLO, "demo", env={"PHLO_HOME": f"{tmp}/home"})()
        env = {"PHLO_HOME": f"{tmp}/home/demo"}
        command(PHLO, "catalog", "sync", env=env)()  # DataHub's environment, the first write
        sync = timed(command(PHLO, "catalog", "sync", env=env), args.repeat)
        docs = timed(command(PHLO, "docs", env=env), args.repeat)
        ratios.record("phlo catalog sync (3 projects, warm)", sync, "phlo docs", docs)
        show = timed(command(PHLO, "catalog", "show", "mrt_glucose_weather_daily", env=env), 5)
        lineage = timed(
            command(PHLO, "catalog", "lineage", "mrt_glucose_weather_daily", env=env), 5
        )
        query = timed(command(PHLO, "query", "select 1", env=env), 5)
        ratios.record("phlo catalog show", show, "phlo query select 1", query)
        ratios.record("phlo catalog lineage --upstream", lineage, "phlo query select 1", query)
    ratios.write("catalog")


if __name__ == "__main__":
    main()
