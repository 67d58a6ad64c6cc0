"""`phlo catalog sync` for the three projects on the demo's home, warm (DataHub's environment
made, the projects parsed; target < 10 s): writing everything (`--full`) and writing what changed
(nothing, here), against `phlo docs` (dbt's documentation of the same projects: the other way
phlo describes every model and column); what the `datahub_metadata` asset adds to a run that
rebuilds a mart (its tests' new results written) against the same run without it; and `phlo
catalog show` (target < 1 s) against `phlo query` of one row (a command start and a read-only
attach), measured in the same run.

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
        full = timed(command(PHLO, "catalog", "sync", "--full", env=env), args.repeat)
        sync = timed(command(PHLO, "catalog", "sync", env=env), args.repeat)
        docs = timed(command(PHLO, "docs", env=env), args.repeat)
        ratios.record("phlo catalog sync --full (3 projects, warm)", full, "phlo docs", docs)
        ratios.record("phlo catalog sync (nothing changed)", sync, "phlo docs", docs)
        mart = "mrt_glucose_weather_daily"
        with_catalog = timed(
            command(PHLO, "materialize", f"{mart},datahub_metadata", env=env), args.repeat
        )
        alone = timed(command(PHLO, "materialize", mart, env=env), args.repeat)
        ratios.record(
            f"materialize {mart} + datahub_metadata", with_catalog, f"materialize {mart}", alone
        )
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
