"""What the hardening costs, each as a ratio to a baseline measured in the same run.

- `phlo query` in its sandbox (checked statement, locked-down DuckDB in a watched child
  process) against the same query through the trusted in-process path, both as commands.
- three `phlo materialize` processes on different days of one home at once (writers serialized
  by the lakehouse lock) against the same three runs one after another.

Results go to bench/results/<date>-hardening.json.

    .venv/bin/python bench/bench_hardening.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from locations.nightscout.sample_server import SampleNightscoutServer
from ratios import Ratios, timed

PHLO = str(Path(sys.executable).with_name("phlo"))
DAYS = ["2024-01-15", "2024-01-16", "2024-01-17"]
SQL = "select reading_date, tir_pct from silver.fct_daily_glucose_metrics order by 1"


def materialize_command(day: str) -> list[str]:
    return [PHLO, "materialize", "dlt_glucose_entries+", "--partition", day]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ratios = Ratios()
    record = ratios.record

    with tempfile.TemporaryDirectory() as tmp, SampleNightscoutServer(timezone="UTC") as server:
        env = {**os.environ, "PHLO_HOME": f"{tmp}/home", "NIGHTSCOUT_URL": server.url}

        def run(*commands: list[str]) -> None:
            processes = [
                subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for c in commands
            ]
            assert all(p.wait() == 0 for p in processes)

        run(materialize_command(DAYS[0]))  # parse the project, create the instance: unmeasured

        sandboxed = timed(lambda: run([PHLO, "query", SQL]), args.repeat)
        trusted_code = (
            f"from phlo_core.lakehouse.connect import query\nprint(len(query({SQL!r}).rows))"
        )
        trusted = timed(lambda: run([sys.executable, "-c", trusted_code]), args.repeat)
        record("phlo query (sandbox)", sandboxed, "trusted in-process query", trusted)

        sequential = timed(lambda: [run(materialize_command(day)) for day in DAYS], 1)
        concurrent = timed(lambda: run(*(materialize_command(day) for day in DAYS)), 1)
        record("3 materialize processes at once", concurrent, "the same 3 in turn", sequential)

    ratios.write("hardening")


if __name__ == "__main__":
    main()
