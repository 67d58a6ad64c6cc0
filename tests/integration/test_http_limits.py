"""A source request's total deadline and size cap against real local servers that misbehave:
one trickles its answer, one sends far more than the cap (issue 18, item 9).

The servers are plain sockets on 127.0.0.1 writing HTTP/1.1 by hand, so they can be as slow
or as large as a hostile source; the clients are built from settings as the assets build them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from locations.nightscout.client import NightscoutClient
from locations.weather.client import OpenMeteoClient
from locations.weather.settings import Place
from phlo_core.http import SourceError
from phlo_core.settings import PhloSettings

MB = 1024 * 1024
TOKEN = "tok-secret-limits-1234"
API_SECRET = "api-secret-limits-5678"
JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"

Respond = Callable[[socket.socket, "HostileServer"], None]


class HostileServer:
    """A threaded TCP server on 127.0.0.1 that reads each request's head, counts it, and hands
    the socket to `respond`; `sent` is what it managed to write, per request."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.requests: list[bytes] = []
        self.sent: list[int] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                with owner._lock:
                    owner.requests.append(head.split(b"\r\n", 1)[0])
                    owner.sent.append(0)
                with contextlib.suppress(OSError):
                    owner.respond(sock, owner)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def send(self, sock: socket.socket, data: bytes) -> None:
        sock.sendall(data)
        with self._lock:
            self.sent[-1] += len(data)

    def __enter__(self) -> HostileServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def trickle_body(sock: socket.socket, server: HostileServer) -> None:
    """Headers at once, then a valid JSON body of 40 bytes, one byte every 0.5 s (20 s)."""
    body = b" " * 38 + b"[]"
    server.send(sock, JSON_HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode())
    for byte in body:
        time.sleep(0.5)
        server.send(sock, bytes([byte]))


def trickle_headers(sock: socket.socket, server: HostileServer) -> None:
    """The status line and headers themselves one byte every 0.2 s (about 25 s)."""
    head = JSON_HEAD + b"X-Slow: y\r\n" * 6 + b"Content-Length: 2\r\n\r\n[]"
    for byte in head:
        time.sleep(0.2)
        server.send(sock, bytes([byte]))


def large_body(total_mb: int, *, declared: bool) -> Respond:
    """`total_mb` MB of body, with its Content-Length or chunked without one."""
    piece = b"x" * MB

    def respond(sock: socket.socket, server: HostileServer) -> None:
        if declared:
            server.send(sock, JSON_HEAD + f"Content-Length: {total_mb * MB}\r\n\r\n".encode())
            for _ in range(total_mb):
                server.send(sock, piece)
        else:
            server.send(sock, JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
            for _ in range(total_mb):
                server.send(sock, f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            server.send(sock, b"0\r\n\r\n")

    return respond


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """Bytes by which this process's peak resident memory rose above its resident memory at
    the start of the block (the kernel's high-water mark reset first, so an earlier test's
    peak does not hide this one's)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("this kernel does not let a process reset its peak RSS (clear_refs)")
    start = _status_kb("VmRSS")
    growth: list[int] = []
    yield growth
    growth.append((_status_kb("VmHWM") - start) * 1024)


def nightscout_client(
    make_settings: Callable[..., PhloSettings], url: str, **limits: object
) -> NightscoutClient:
    settings = make_settings(
        nightscout_url=url, nightscout_api_secret=API_SECRET, nightscout_token=TOKEN, **limits
    )
    return NightscoutClient.from_settings(settings)


def assert_one_line_without_credentials(message: str) -> None:
    assert "\n" not in message
    for secret in (TOKEN, API_SECRET, hashlib.sha1(API_SECRET.encode()).hexdigest()):
        assert secret not in message
    assert "token=" not in message  # the URL is named without its query string


@pytest.mark.parametrize("respond", [trickle_body, trickle_headers])
def test_a_trickling_server_is_cut_off_at_the_deadline_and_retried(
    respond: Respond, make_settings: Callable[..., PhloSettings]
) -> None:
    with HostileServer(respond) as server:
        client = nightscout_client(
            make_settings, server.url, http_deadline_seconds=2, http_max_attempts=2
        )
        started = time.monotonic()
        with pytest.raises(SourceError) as error:
            client.fetch_entries(0, 1000)
        elapsed = time.monotonic() - started
    # Two attempts of 2 s each (and 0.01 s of backoff), not the 20 s the server would take.
    assert 4.0 <= elapsed < 6.0, elapsed
    assert len(server.requests) == 2
    message = str(error.value)
    assert message == (
        f"Nightscout unavailable: GET {server.url}/api/v1/entries.json took longer than 2 s "
        "(HTTP_DEADLINE_SECONDS) after 2 attempts"
    )
    assert_one_line_without_credentials(message)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_answer_over_the_cap_is_refused_without_holding_it(
    declared: bool, make_settings: Callable[..., PhloSettings]
) -> None:
    with HostileServer(large_body(200, declared=declared)) as server:
        client = nightscout_client(
            make_settings, server.url, http_max_response_mb=10, http_max_attempts=3
        )
        with peak_rss_growth() as growth, pytest.raises(SourceError) as error:
            client.fetch_entries(0, 1000)
    print(f"peak RSS growth for 3 x 200 MB answers, 10 MB cap: {growth[0] / MB:.1f} MB")
    assert growth[0] < 40 * MB, growth[0] / MB
    assert len(server.requests) == 3
    # Stopped early: with Content-Length before any of the body was read, otherwise at the
    # cap; the server got out at most what the sockets' buffers took on top.
    assert all(sent < 60 * MB for sent in server.sent), server.sent
    message = str(error.value)
    assert message == (
        f"Nightscout unavailable: GET {server.url}/api/v1/entries.json answered more than "
        "10 MB (HTTP_MAX_RESPONSE_MB) after 3 attempts"
    )
    assert_one_line_without_credentials(message)


def test_the_cap_holds_for_open_meteo_too(make_settings: Callable[..., PhloSettings]) -> None:
    with HostileServer(large_body(50, declared=False)) as server:
        settings = make_settings(
            open_meteo_url=server.url,
            open_meteo_forecast_url=server.url,
            http_max_response_mb=1,
            http_max_attempts=2,
        )
        with OpenMeteoClient.from_settings(settings) as client, pytest.raises(SourceError) as e:
            day = dt.date(2024, 6, 1)
            client.fetch((Place("oslo", 59.91, 10.75),), day, day, dt.date(2024, 6, 20))
    assert len(server.requests) == 2
    assert str(e.value) == (
        f"Open-Meteo archive unavailable: GET {server.url}/v1/archive answered more than 1 MB "
        "(HTTP_MAX_RESPONSE_MB) after 2 attempts"
    )


def test_the_cap_cuts_off_only_what_exceeds_it(
    make_settings: Callable[..., PhloSettings],
) -> None:
    """A 3 MB first page under a 4 MB cap is read and paged on from; the 5 MB second page is
    refused on every attempt."""
    entries = b",".join(
        b'{"_id": "%d", "date": %d, "sgv": 100, "type": "sgv", "pad": "%s"}'
        % (i, 500 + i % 500, b"p" * 256)
        for i in range(10_000)
    )
    page = b"[" + entries + b"]"
    assert 2 * MB < len(page) < 4 * MB

    def respond(sock: socket.socket, server: HostileServer) -> None:
        body = page if len(server.requests) == 1 else b" " * (5 * MB)
        server.send(sock, JSON_HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    with HostileServer(respond) as server:
        client = nightscout_client(
            make_settings, server.url, http_max_response_mb=4, http_max_attempts=2
        )
        with pytest.raises(SourceError, match=r"answered more than 4 MB .* after 2 attempts"):
            client.fetch_entries(0, 1000)
    # The second page asks below the oldest entry of the first: the first was read whole.
    assert len(server.requests) == 3
    assert all(b"%5B%24lte%5D=500" in request for request in server.requests[1:])
