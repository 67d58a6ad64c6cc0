"""`phlo report glucose` for 14 days on the demo's home (target < 3 s), against the same
window's numbers alone through `phlo query` (a command start, a read-only attach and the
report view: what any answer from the lakehouse costs), measured in the same run.

    .venv/bin/python bench/bench_report.py [--repeat 5]

Results go to bench/results/<date>-report.json.
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
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ratios = Ratios()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        env = {"PHLO_HOME": str(home)}
        command(PHLO, "demo", "--no-catalog", env=env)()
        numbers = timed(
            command(PHLO, "query", "select * from marts.mrt_glucose_report_window",
                    env={"PHLO_HOME": str(home / "demo")}),
            args.repeat,
        )  # fmt: skip
        page = timed(
            command(PHLO, "report", "glucose", "--demo", "--out", f"{tmp}/r.html", env=env),
            args.repeat,
        )
        both = timed(
            command(PHLO, "report", "glucose", "--demo", "--out", f"{tmp}/r.html", "--png",
                    f"{tmp}/r.png", env=env),
            args.repeat,
        )  # fmt: skip
        ratios.record("phlo report glucose, 14 days (HTML)", page, "phlo query (the numbers)",
                      numbers)  # fmt: skip
        ratios.record("phlo report glucose, 14 days (HTML + PNG)", both,
                      "phlo query (the numbers)", numbers)  # fmt: skip
    ratios.write("report")


if __name__ == "__main__":
    main()
