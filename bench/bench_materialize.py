"""Benchmarks of per-run overhead, each printed as a ratio to a baseline measured in the same run.

These machines are noisy: absolute seconds vary from run to run, ratios much less. Results are
written to bench/results/<date>-materialize.json.

    .venv/bin/python bench/bench_materialize.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.calendar import DayRange
from phlo_core.dbt.runner import invoke_dbt, parsed_manifest
from phlo_core.runs.engine import materialize
from phlo_core.settings import load_settings
from ratios import ROOT, Ratios, command, timed

PHLO = str(Path(sys.executable).with_name("phlo"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    ratios = Ratios()
    record = ratios.record

    python_floor = timed(command(sys.executable, "-c", "pass"), args.repeat)
    import_dagster = timed(command(sys.executable, "-c", "import dagster"), args.repeat)
    help_seconds = timed(command(PHLO, "--help"), args.repeat)
    record("phlo --help", help_seconds, "python -c pass", python_floor)
    record("phlo --help", help_seconds, "python -c 'import dagster'", import_dagster)

    with tempfile.TemporaryDirectory() as tmp, SampleNightscoutServer(timezone="UTC") as server:
        env = {"PHLO_HOME": f"{tmp}/cli", "NIGHTSCOUT_URL": server.url}
        one_day = command(
            PHLO, "materialize", "dlt_glucose_entries+", "--partition", "2024-01-15", env=env
        )
        one_day()  # first run parses the dbt project and creates the instance: not measured
        import_stack = timed(
            command(sys.executable, "-c", "import dagster, dagster_dbt, dbt.cli.main"), args.repeat
        )
        record(
            "phlo materialize (1 day, all 7 assets)",
            timed(one_day, args.repeat),
            "importing dagster+dagster_dbt+dbt",
            import_stack,
        )

        settings = load_settings(phlo_home=Path(tmp) / "engine", nightscout_url=server.url)
        first = dt.date(2024, 2, 1)
        days = DayRange(first, first + dt.timedelta(days=args.days))
        materialize("dlt_glucose_entries+", DayRange(first, first + dt.timedelta(days=1)), settings)

        def per_day() -> None:
            for day in days.days():
                materialize(
                    "dlt_glucose_entries+", DayRange(day, day + dt.timedelta(days=1)), settings
                )

        def one_range() -> None:
            outcomes = materialize("dlt_glucose_entries+", days, settings)
            assert all(o.success for o in outcomes)

        per_day_seconds = timed(per_day, 1)
        record(
            f"{args.days} days as one range run",
            timed(one_range, args.repeat),
            f"{args.days} one-day runs",
            per_day_seconds,
        )

        # dbt in-process with a manifest parsed once, against the `dbt build` subprocess that
        # dagster-dbt's DbtCliResource runs (new vars each run defeat dbt's partial parsing).
        project = ROOT / "src" / "dbt" / "nightscout"
        dbt_vars = json.dumps(
            {
                "start_date": "2024-02-01",
                "end_date": "2024-02-02",
                "timezone": "UTC",
                "reading_interval_minutes": 5,
            }
        )
        build = ["build", "--target-path", f"{tmp}/dbt-bench", "--vars", dbt_vars]
        dbt_cli = str(Path(sys.executable).with_name("dbt"))
        subprocess_build = timed(
            command(
                dbt_cli,
                *build,
                "--project-dir",
                str(project),
                "--profiles-dir",
                str(settings.dbt_dir),
            ),
            args.repeat,
        )
        manifest = parsed_manifest(project, settings)
        in_process = timed(
            lambda: invoke_dbt(build, project, settings, manifest=manifest), args.repeat
        )
        record("dbt build in-process (1 day)", in_process, "dbt build subprocess", subprocess_build)

    ratios.write("materialize")


if __name__ == "__main__":
    main()
