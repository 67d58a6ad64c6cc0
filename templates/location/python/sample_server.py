"""A local server speaking the example source's protocol, with generated data:
`GET /v1/events?start=ISO&end=ISO` answers `{"events": [{"id", "at", "value"}]}`, one event at
half past every UTC hour in [start, end), its value `(hour * 7 + day of month) % 100`.

Run it by hand: `python -m locations.example.sample_server --port 8090`.
"""

from __future__ import annotations

import argparse
import datetime as dt

from phlo_core.sample_http import SampleAnswer, SampleHttpServer, SampleRequest

HOUR = dt.timedelta(hours=1)


def event_value(at: dt.datetime) -> int:
    return (at.hour * 7 + at.day) % 100


class SampleExampleServer(SampleHttpServer):
    def answer(self, request: SampleRequest) -> SampleAnswer:
        if request.path != "/v1/events":
            return SampleAnswer(404, self.error_body(404, "not found"))
        try:
            start, end = (dt.datetime.fromisoformat(request.query[k][0]) for k in ("start", "end"))
        except (KeyError, ValueError):
            return SampleAnswer(400, self.error_body(400, "start and end: ISO instants"))
        at = start.astimezone(dt.UTC).replace(minute=30, second=0, microsecond=0)
        at = at if at >= start else at + HOUR
        events = []
        while at < end:
            events.append(
                {"id": at.strftime("%Y%m%d%H"), "at": at.isoformat(), "value": event_value(at)}
            )
            at += HOUR
        return SampleAnswer(200, {"events": events})


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the example source's sample events.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    SampleExampleServer(host=args.host, port=args.port).serve_until_interrupted(
        "sample example source"
    )


if __name__ == "__main__":
    main()
