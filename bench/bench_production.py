"""The production profile (PostgreSQL catalog, S3 files, Dagster in PostgreSQL, marts published)
beside the embedded default (SQLite catalog, local files, SQLite Dagster), in the same run:
`dlt_glucose_entries+` for 1 day and for 30 days, each printed as the ratio production /
embedded. Target: 30 days cost at most 1.5x on production.

Starts its own servers (as `phlo services up` does) in a temporary home and removes them.

    .venv/bin/python bench/bench_production.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
from pathlib import Path

from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.calendar import DayRange
from phlo_core.runs.engine import materialize
from phlo_core.services import control as services
from phlo_core.settings import PhloSettings, load_settings
from ratios import Ratios, timed

SECRET = "bench-secret"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ratios = Ratios()
    with tempfile.TemporaryDirectory() as tmp, SampleNightscoutServer(api_secret=SECRET) as server:
        root = Path(tmp)
        servers = load_settings(phlo_home=root / "services-home")
        services.up(servers)
        try:
            common = {"nightscout_url": server.url, "nightscout_api_secret": SECRET}
            embedded = load_settings(phlo_home=root / "embedded", **common)
            profile = services.provision(servers, "bench")
            production = load_settings(
                phlo_home=root / "production",
                **common,
                **{key.lower(): value for key, value in profile.items()},
            )
            first = dt.date(2024, 2, 1)

            def run(settings: PhloSettings, days: int) -> None:
                window = DayRange(first, first + dt.timedelta(days=days))
                outcomes = materialize("dlt_glucose_entries+", window, settings)
                assert outcomes and all(o.success for o in outcomes), [o.errors for o in outcomes]

            for settings in (embedded, production):
                run(settings, 30)  # first run: dbt parse, instance and catalog creation
            for days in (1, 30):
                local = timed(lambda days=days: run(embedded, days), args.repeat)
                remote = timed(lambda days=days: run(production, days), args.repeat)
                ratios.record(
                    f"production profile, {days} day(s)",
                    remote,
                    f"embedded default, {days} day(s)",
                    local,
                )
        finally:
            services.down(servers)
    ratios.write("production")


if __name__ == "__main__":
    main()
