"""A Nightscout-compatible server on loopback that serves the sample data.

It speaks the parts of Nightscout's v1 API that Phlo uses, with Nightscout's semantics:
`GET /api/v1/entries.json` with `count` (default 10), `find[date][$gte|$gt|$lte|$lt]` on epoch
milliseconds and `find[type]`, newest first; auth by the `api-secret` header (SHA-1 hex of the
API secret) or a `token` query parameter, 401 otherwise. `fail_next()` (core's sample server)
makes it answer the next requests with an error status or a stall; `redirect_to` makes it
answer with a 302 to the same path under another base URL (a request already under that base's
path, on this server, is served: a site moved to a sub-path).

Run it by hand: `python -m locations.nightscout.sample_server --port 1337 --api-secret s3cret`.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from locations.nightscout.sample_data import INTERVAL_MS, entries_between
from phlo_core.sample_http import SampleAnswer, SampleHttpServer, SampleRequest

EntrySource = Callable[[int, int], Iterator[dict]]


class SampleNightscoutServer(SampleHttpServer):
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timezone: str = "UTC",
        api_secret: str | None = None,
        token: str | None = None,
        entries: EntrySource | None = None,
        max_count: int | None = None,
        redirect_to: str | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        tz = ZoneInfo(timezone)
        self.entries: EntrySource = entries or (lambda lo, hi: entries_between(lo, hi, tz))
        self.api_secret_sha1 = hashlib.sha1(api_secret.encode()).hexdigest() if api_secret else None
        self.token = token
        self.max_count = max_count
        self.redirect_to = redirect_to
        self.requests: list[str] = []
        self.headers_seen: list[dict[str, str]] = []

    def _moved(self) -> str:
        return urlsplit(self.redirect_to or "").path.rstrip("/")

    def received(self, request: SampleRequest) -> None:
        self.requests.append(request.path)
        self.headers_seen.append(dict(request.headers))

    def before_faults(self, request: SampleRequest) -> SampleAnswer | None:
        """A site moved elsewhere answers 302, but for a path already under its new one."""
        moved = self._moved()
        if self.redirect_to is None or (moved and request.path.startswith(moved + "/")):
            return None
        return SampleAnswer(
            302, headers={"Location": self.redirect_to.rstrip("/") + request.target}
        )

    def answer(self, request: SampleRequest) -> SampleAnswer:
        moved, path = self._moved(), request.path
        if moved and path.startswith(moved + "/"):
            path = path.removeprefix(moved)
        if not self.authorized(request.headers, request.query):
            return SampleAnswer(401, self.error_body(401, "Unauthorized"))
        if path in ("/api/v1/entries.json", "/api/v1/entries"):
            try:
                return SampleAnswer(200, self.select(request.query))
            except ValueError as exc:
                return SampleAnswer(400, self.error_body(400, str(exc)))
        if path == "/api/v1/status.json":
            return SampleAnswer(200, {"status": "ok", "name": "phlo-sample-nightscout"})
        return SampleAnswer(404, self.error_body(404, "Not found"))

    def authorized(self, headers: dict[str, str], query: dict[str, list[str]]) -> bool:
        if self.api_secret_sha1 is None and self.token is None:
            return True
        secret = headers.get("api-secret", "").lower()
        if self.api_secret_sha1 is not None and secret == self.api_secret_sha1:
            return True
        return self.token is not None and query.get("token", [""])[0] == self.token

    def select(self, query: dict[str, list[str]]) -> list[dict]:
        def bound(op: str) -> int | None:
            values = query.get(f"find[date][{op}]")
            return int(float(values[0])) if values else None

        lo, hi = 0, int(time.time() * 1000)  # like Nightscout: nothing from the future
        if (gte := bound("$gte")) is not None:
            lo = max(lo, gte)
        if (gt := bound("$gt")) is not None:
            lo = max(lo, gt + 1)
        if (lt := bound("$lt")) is not None:
            hi = min(hi, lt)
        if (lte := bound("$lte")) is not None:
            hi = min(hi, lte + 1)
        count = int(query.get("count", ["10"])[0])
        if self.max_count is not None:
            count = min(count, self.max_count)
        if lo == 0:
            # No lower bound: the newest `count` entries. Generated data has no beginning, so
            # look back far enough for them (two readings' time each, for gaps) and no further.
            lo = max(0, hi - (count + 50) * 2 * INTERVAL_MS)
        wanted_type = query.get("find[type]", [None])[0]
        # Newest first, `count` of them: generate the newest part of the window only, widened
        # until it holds enough (as an index would answer), not the whole window per page.
        span = (count + 50) * INTERVAL_MS
        while True:
            start = max(lo, hi - span)
            matching = [e for e in self.entries(start, hi) if wanted_type in (None, e["type"])]
            if len(matching) >= count or start == lo:
                break
            span *= 2
        matching.sort(key=lambda e: (e["date"], e["_id"]), reverse=True)
        return matching[:count]


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Serve Phlo's sample CGM data over Nightscout's API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1337)
    parser.add_argument("--timezone", default="UTC")
    parser.add_argument("--api-secret", default=None)
    parser.add_argument("--token", default=None)
    args = parser.parse_args()
    server = SampleNightscoutServer(
        host=args.host,
        port=args.port,
        timezone=args.timezone,
        api_secret=args.api_secret,
        token=args.token,
    )
    server.serve_until_interrupted("sample Nightscout")


if __name__ == "__main__":
    main()
