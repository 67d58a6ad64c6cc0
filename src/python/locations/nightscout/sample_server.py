"""A Nightscout-compatible server on loopback that serves the sample data.

It speaks the parts of Nightscout's v1 API that Phlo uses, with Nightscout's semantics:
`GET /api/v1/entries.json` with `count` (default 10), `find[date][$gte|$gt|$lte|$lt]` on epoch
milliseconds and `find[type]`, newest first; auth by the `api-secret` header (SHA-1 hex of the
API secret) or a `token` query parameter, 401 otherwise. `fail_next()` makes it answer the next
requests with an error status or a stall, to exercise clients' retries against real HTTP;
`redirect_to` makes it answer with a 302 to the same path under another base URL (a request
already under that base's path, on this server, is served: a site moved to a sub-path).

Run it by hand: `python -m locations.nightscout.sample_server --port 1337 --api-secret s3cret`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from locations.nightscout.sample_data import INTERVAL_MS, entries_between

EntrySource = Callable[[int, int], Iterator[dict]]


class SampleNightscoutServer:
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
        tz = ZoneInfo(timezone)
        self.entries: EntrySource = entries or (lambda lo, hi: entries_between(lo, hi, tz))
        self.api_secret_sha1 = hashlib.sha1(api_secret.encode()).hexdigest() if api_secret else None
        self.token = token
        self.max_count = max_count
        self.redirect_to = redirect_to
        self.requests: list[str] = []
        self.headers_seen: list[dict[str, str]] = []
        self._faults: deque[tuple[int, float]] = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, times: int, status: int = 500, stall_seconds: float = 0.0) -> None:
        """Answer the next `times` requests with `status` (after stalling, if asked)."""
        with self._lock:
            self._faults.extend([(status, stall_seconds)] * times)

    def _take_fault(self) -> tuple[int, float] | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def start(self) -> SampleNightscoutServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> SampleNightscoutServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

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

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _send(self, status: int, body: object) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                server.requests.append(parts.path)
                server.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
                moved = urlsplit(server.redirect_to or "").path.rstrip("/")
                if moved and parts.path.startswith(moved + "/"):
                    parts = parts._replace(path=parts.path.removeprefix(moved))
                elif server.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to.rstrip("/") + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                fault = server._take_fault()
                if fault is not None:
                    status, stall = fault
                    time.sleep(stall)
                    self._send(status, {"status": status, "message": "injected fault"})
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                if not server.authorized(headers, query):
                    self._send(401, {"status": 401, "message": "Unauthorized"})
                    return
                if parts.path in ("/api/v1/entries.json", "/api/v1/entries"):
                    try:
                        self._send(200, server.select(query))
                    except ValueError as exc:
                        self._send(400, {"status": 400, "message": str(exc)})
                elif parts.path == "/api/v1/status.json":
                    self._send(200, {"status": "ok", "name": "phlo-sample-nightscout"})
                else:
                    self._send(404, {"status": 404, "message": "Not found"})

        return Handler


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
    print(f"sample Nightscout (SAMPLE DATA) at {server.url}", flush=True)
    server.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
