"""HTTP for ingestion: one client with timeouts, a deadline, a size cap and retries with backoff.

Retried: connection errors, timeouts, 429 and 5xx, and answers over the deadline or the size
cap. Anything else (401, 404, ...) fails at once, because asking again will not help. Errors
name the URL without its query string, so tokens passed as query parameters never reach a log
or an error message.

Every request (one attempt, its redirects included) has a total deadline and a maximum body
size (HTTP_DEADLINE_SECONDS, HTTP_MAX_RESPONSE_MB). Timeouts alone bound each network wait, so
a server trickling a byte every few seconds kept a run alive as long as it liked; a body read
whole before anything counted it took its size, and several times more once decoded and
parsed, in memory (1 GB: 6.5 GB). So a body is streamed and counted as it arrives and dropped
at the cap (a Content-Length above it is refused before any of the body is read; the cap
counts decoded bytes, so a compressed answer overshoots it by one network read's expansion at
most), and a watchdog shuts the attempt's socket down when its deadline passes, wherever the
exchange is (connecting, waiting for headers, reading the body). Connections are not kept
alive between requests: each attempt opens its own, which is how the watchdog knows its socket.

Redirects are followed by hand, and only within the configured origin (scheme, host, port):
credentials travel in headers and query parameters, and a redirect to another host must not
carry them there. A redirect elsewhere is an error naming both origins.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from phlo_core.log import get_logger
from phlo_core.redact import origin, redact, same_site
from phlo_core.settings import (
    DEFAULT_HTTP_DEADLINE_SECONDS,
    DEFAULT_HTTP_MAX_RESPONSE_MB,
    PhloSettings,
)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MB = 1024 * 1024
# An error answer is read for its reason only: this much of it, whatever the cap.
ERROR_BODY_BYTES = 64 * 1024

# httpx logs every request URL at INFO, query string (and so any token) included.
logging.getLogger("httpx").setLevel(logging.WARNING)
log = get_logger(__name__)


class SourceError(RuntimeError):
    """A source answered in a way that retrying will not fix, or never answered after retries."""


class _RetryableStatusError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class _LimitError(Exception):
    """An attempt outlived its deadline or its answer outgrew the cap: retried like a timeout
    (the message is what the final error says of it)."""


def _shut(sock: socket.socket) -> None:
    """Shut a socket down under a thread that may be blocked reading it (the read returns at
    once). socket.socket's own shutdown, also for an SSLSocket, whose override would tear its
    TLS state down under that thread."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Deadline:
    """One attempt's total deadline. A watchdog thread shuts the attempt's sockets down when it
    passes, so a read blocked on a trickling or silent server returns then, not a read timeout
    later. The sockets are learnt from httpcore's trace events as connections open."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._passed = False
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self._ends - time.monotonic()

    def over(self) -> bool:
        return self._passed or self.remaining() <= 0

    def exceeded(self) -> _LimitError:
        return _LimitError(f"took longer than {self.seconds:g} s (HTTP_DEADLINE_SECONDS)")

    def check(self) -> None:
        if self.over():
            raise self.exceeded()

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore's `trace` extension: note each socket the attempt opens (a TLS stream's
        socket replaces the plain one it wraps)."""
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with self._lock:
                self._sockets.append(sock)
                if self._passed:
                    _shut(sock)

    def _cut(self) -> None:
        with self._lock:
            self._passed = True
            for sock in self._sockets:
                _shut(sock)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._sockets.clear()


@dataclass(frozen=True)
class _Answer:
    """A final (not redirected) answer, its body read within the limits."""

    status_code: int
    body: bytes | bytearray


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0


def http_options(settings: PhloSettings) -> dict[str, Any]:
    """The core's HTTP settings (HTTP_...) as a client's keyword arguments: timeout, deadline,
    size cap and retries."""
    return {
        "timeout_seconds": settings.http_timeout_seconds,
        "deadline_seconds": settings.http_deadline_seconds,
        "max_response_mb": settings.http_max_response_mb,
        "policy": RetryPolicy(
            max_attempts=settings.http_max_attempts,
            backoff_seconds=settings.http_backoff_seconds,
        ),
    }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _RetryableStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, _LimitError):
        return str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.TransportError):
        return f"connection failed ({type(exc).__name__})"
    return type(exc).__name__


def _reason(content: bytes | bytearray, secrets: Sequence[str] = ()) -> str:
    """The reason a JSON API gave for refusing a request (`reason`, `message` or `error` as
    text), as `: reason`, redacted (the client's own credentials too, should the server echo
    them) and on one line; empty when it gave none."""
    try:
        body = json.loads(content)
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    for key in ("reason", "message", "error"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            text = " ".join(value.split())
            for secret in secrets:
                text = text.replace(secret, "***")
            return ": " + redact(text)[:300]
    return ""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), 60.0) if value else None
    except ValueError:
        return None


class RetryingClient:
    """GET JSON with retries, each request within a deadline and a size cap. `name` (the
    source's name) labels every error."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float = 30.0,
        deadline_seconds: float = DEFAULT_HTTP_DEADLINE_SECONDS,
        max_response_mb: float = DEFAULT_HTTP_MAX_RESPONSE_MB,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        credentials_hint: str = "",
        secrets: Sequence[str] = (),
    ) -> None:
        self.name = name
        # Never echoed back: replaced by *** in anything the server's answer puts in an error.
        self._secrets = tuple(secret for secret in secrets if secret)
        self.credentials_hint = credentials_hint
        self.policy = policy or RetryPolicy()
        self.timeout_seconds = timeout_seconds
        self.deadline_seconds = deadline_seconds
        self.max_response_mb = max_response_mb
        self.max_response_bytes = int(max_response_mb * MB)
        self.attempts_made = 0
        self._current_url = ""
        # Refused unquoted: a user name or password does not belong in a source's URL, and
        # one holding '/' is cut there by every parser, its tail left in the path (where
        # redact() does not look) and its head taken for the port (which httpx quotes).
        refusal = SourceError(
            f"{name}: the configured URL is not a valid http(s) URL without credentials (not "
            "shown): credentials go in the source's own settings, never in its URL"
        )
        if "@" in base_url:
            raise refusal
        try:
            self._client = httpx.Client(
                base_url=base_url,
                headers=dict(headers or {}),
                timeout=timeout_seconds,
                transport=transport,
                follow_redirects=False,
                # A new connection per request: the deadline's watchdog learns each socket
                # as it opens (see _Deadline).
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        except httpx.InvalidURL:
            raise refusal from None
        self.origin = origin(str(self._client.base_url))

    @classmethod
    def from_settings(
        cls, name: str, base_url: str, settings: PhloSettings, **options: Any
    ) -> RetryingClient:
        """A client of the source `name` at `base_url` with the core's HTTP settings."""
        return cls(name, base_url, **{**http_options(settings), **options})

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RetryingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = _retry_after(exc.response) if isinstance(exc, _RetryableStatusError) else None
        backoff = wait_exponential_jitter(
            multiplier=self.policy.backoff_seconds,
            max=self.policy.max_backoff_seconds,
            jitter=self.policy.backoff_seconds / 2,
        )
        wait = hinted if hinted is not None else backoff(state)
        log.warning(
            "retrying request",
            source=self.name,
            url=self._current_url,
            attempt=state.attempt_number,
            of=self.policy.max_attempts,
            wait_seconds=round(wait, 2),
            reason=_describe(exc) if exc is not None else "unknown",
        )
        return wait

    def _open(
        self, target: str | httpx.URL, params: Mapping[str, Any] | None, deadline: _Deadline
    ) -> httpx.Response:
        """Send one GET and return once its headers are in, the body left unread. No network
        wait is allowed past what is left of the deadline."""
        remaining = deadline.remaining()
        if remaining <= 0:
            raise deadline.exceeded()
        request = self._client.build_request(
            "GET",
            target,
            params=params,
            timeout=min(self.timeout_seconds, remaining),
            extensions={"trace": deadline.trace},
        )
        try:
            return self._client.send(request, stream=True)
        except httpx.TransportError:
            if deadline.over():
                raise deadline.exceeded() from None
            raise

    def _read_body(
        self, response: httpx.Response, deadline: _Deadline, cap: int
    ) -> bytearray | None:
        """The body, counted as it arrives; None as soon as it is known to exceed `cap` bytes
        (from Content-Length, before reading any of it, or from what has arrived)."""
        declared = response.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > cap:
            return None
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > cap:
                    return None
                deadline.check()
        except httpx.TransportError:
            if deadline.over():
                raise deadline.exceeded() from None
            raise
        return body

    def _exchange(
        self, path: str, params: Mapping[str, Any] | None, url: str, deadline: _Deadline
    ) -> _Answer:
        """One attempt: the request, its redirects within the origin, and the final body."""
        response = self._open(path, params, deadline)
        try:
            hops = 0
            while response.status_code in REDIRECT_STATUSES and response.headers.get("location"):
                if hops == MAX_REDIRECTS:
                    raise SourceError(
                        f"{self.name} redirected GET {url} more than {MAX_REDIRECTS} times "
                        "(a redirect loop): check the configured URL"
                    )
                target = response.url.join(response.headers["location"])
                if not same_site(self.origin, str(target)):
                    raise SourceError(
                        f"{self.name} at {self.origin} redirected GET {url} to another host, "
                        f"{origin(redact(str(target)))}; credentials are only sent to the "
                        "configured origin: use the final address as the URL if that host "
                        "is right"
                    )
                response.close()
                response = self._open(target, None, deadline)
                hops += 1
            if response.status_code in RETRY_STATUSES:
                raise _RetryableStatusError(response)
            if response.is_error:
                reason = self._read_body(response, deadline, ERROR_BODY_BYTES)
                return _Answer(response.status_code, reason or b"")
            body = self._read_body(response, deadline, self.max_response_bytes)
            if body is None:
                raise _LimitError(
                    f"answered more than {self.max_response_mb:g} MB (HTTP_MAX_RESPONSE_MB)"
                )
            return _Answer(response.status_code, body)
        finally:
            response.close()

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        url = redact(str(self._client.base_url.join(path.lstrip("/"))))
        self._current_url = url

        def attempt() -> _Answer:
            self.attempts_made += 1
            deadline = _Deadline(self.deadline_seconds)
            try:
                return self._exchange(path, params, url, deadline)
            finally:
                deadline.close()

        retrying = Retrying(
            retry=retry_if_exception(
                lambda e: isinstance(e, _RetryableStatusError | _LimitError | httpx.TransportError)
            ),
            stop=stop_after_attempt(self.policy.max_attempts),
            wait=self._wait,
            reraise=True,
        )
        try:
            answer = retrying(attempt)
        except (_RetryableStatusError, _LimitError, httpx.TransportError) as exc:
            raise SourceError(
                f"{self.name} unavailable: GET {url} {_describe(exc)} "
                f"after {self.policy.max_attempts} attempts"
            ) from None
        if answer.status_code in (401, 403):
            hint = f": {self.credentials_hint}" if self.credentials_hint else ""
            raise SourceError(
                f"{self.name} rejected the credentials (GET {url} returned HTTP "
                f"{answer.status_code}){hint}"
            )
        if answer.status_code >= 400:
            raise SourceError(
                f"{self.name} error: GET {url} returned HTTP {answer.status_code}"
                f"{_reason(answer.body, self._secrets)}"
            )
        try:
            return json.loads(answer.body)
        except ValueError:
            raise SourceError(
                f"{self.name} answered GET {url} with something that is not JSON"
            ) from None
