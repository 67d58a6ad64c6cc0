"""Weather ingestion cost by range length, each printed as a ratio to a baseline measured in the
same run: a range of days is one request per place and API and one run, so 28 days should cost
little more than one.

    .venv/bin/python bench/bench_weather.py [--repeat 3] [--places 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
from pathlib import Path

from locations.weather.sample_server import SampleOpenMeteoServer
from phlo_core.calendar import DayRange
from phlo_core.runs.engine import materialize
from phlo_core.settings import load_settings
from ratios import Ratios, timed

PLACES = ["berlin=52.52,13.41", "oslo=59.91,10.75", "rome=41.90,12.50", "lisbon=38.72,-9.14"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--places", type=int, default=3, choices=range(1, len(PLACES) + 1))
    args = parser.parse_args()
    ratios = Ratios()
    with tempfile.TemporaryDirectory() as tmp, SampleOpenMeteoServer() as server:
        settings = load_settings(
            phlo_home=Path(tmp) / "phlo",
            phlo_timezone="Europe/Berlin",
            open_meteo_url=server.url,
            open_meteo_forecast_url=server.url,
            weather_places=";".join(PLACES[: args.places]),
        )
        first = dt.date(2024, 2, 1)

        def run(days: int, selection: str = "dlt_weather_observations") -> None:
            outcomes = materialize(
                selection, DayRange(first, first + dt.timedelta(days=days)), settings
            )
            assert all(o.success for o in outcomes), [o.errors for o in outcomes]

        run(1, "dlt_weather_observations+")  # first run: dbt parse, instance creation
        one_day = timed(lambda: run(1), args.repeat)
        requests_before = len(server.requests)
        month = timed(lambda: run(28), args.repeat)
        requests = (len(server.requests) - requests_before) // args.repeat
        ratios.record(
            f"ingest 28 days x {args.places} places ({requests} requests a run)",
            month,
            "ingest 1 day",
            one_day,
        )
        whole_one = timed(lambda: run(1, "dlt_weather_observations+"), args.repeat)
        whole_month = timed(lambda: run(28, "dlt_weather_observations+"), args.repeat)
        ratios.record(
            "dlt_weather_observations+ for 28 days (weather and insights runs)",
            whole_month,
            "the same for 1 day",
            whole_one,
        )
    ratios.write("weather")


if __name__ == "__main__":
    main()
