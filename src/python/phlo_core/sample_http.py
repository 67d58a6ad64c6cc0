"""What every location's sample source server shares: a JSON HTTP server on loopback serving
generated data over the source's real protocol, for the demo, the tests and the benches.

A location's server subclasses `SampleHttpServer` and answers GET requests (`answer`), in the
source's own words (`error_body`); this module gives it the lifecycle (`start`/`stop`, a context
manager, `serve_until_interrupted` for `python -m`), the request log and fault injection:
`fail_next(times, status, stall_seconds)` answers the next requests with an error status, after a
stall if asked, to exercise a client's retries and timeouts against real HTTP.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class SampleRequest:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    target: str  # the path with its query string, as the client sent it


@dataclass(frozen=True)
class SampleAnswer:
    status: int
    body: object = None  # JSON; None with a redirect
    headers: dict[str, str] = field(default_factory=dict)


class SampleHttpServer:
    """A loopback JSON server; subclasses implement `answer` and `error_body`."""

    keep_blank_values = False  # whether `?a=` reaches `answer` as [""] (as the source parses)

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
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

    def start(self) -> Self:
        # A short poll interval: stop() returns in a twentieth of a second, not half a second.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def serve_until_interrupted(self, what: str) -> None:
        """Serve in the foreground until Ctrl-C (a server started by hand)."""
        print(f"{what} (SAMPLE DATA) at {self.url}", flush=True)
        self.start()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            self.stop()

    # What a location's server says.

    def received(self, request: SampleRequest) -> None:
        """Each request as it arrives, before any fault or answer (to record it)."""

    def before_faults(self, request: SampleRequest) -> SampleAnswer | None:
        """An answer that comes before injected faults (a redirect), or None."""
        return None

    def answer(self, request: SampleRequest) -> SampleAnswer:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> object:
        """The body the source sends with an error status."""
        return {"status": status, "message": message}

    def _take_fault(self) -> tuple[int, float] | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _respond(self, request: SampleRequest) -> SampleAnswer:
        self.received(request)
        early = self.before_faults(request)
        if early is not None:
            return early
        fault = self._take_fault()
        if fault is not None:
            status, stall = fault
            time.sleep(stall)
            return SampleAnswer(status, self.error_body(status, "injected fault"))
        return self.answer(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                request = SampleRequest(
                    path=parts.path,
                    query=parse_qs(parts.query, keep_blank_values=server.keep_blank_values),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    target=self.path,
                )
                reply = server._respond(request)
                payload = (
                    b""
                    if reply.body is None
                    else json.dumps(reply.body, ensure_ascii=False).encode()
                )
                self.send_response(reply.status)
                if reply.body is not None:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
