"""HTTP for ingestion: one client with timeouts and retries with backoff.

Retried: connection errors, timeouts, 429 and 5xx. Anything else (401, 404, ...) fails at once,
because asking again will not help. Errors name the URL without its query string, so tokens
passed as query parameters never reach a log or an error message.

Redirects are followed by hand, and only within the configured origin (scheme, host, port):
credentials travel in headers and query parameters, and a redirect to another host must not
carry them there. A redirect elsewhere is an error naming both origins.
"""

from __future__ import annotations

import logging
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

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5

# httpx logs every request URL at INFO, query string (and so any token) included.
logging.getLogger("httpx").setLevel(logging.WARNING)
log = get_logger(__name__)


class SourceError(RuntimeError):
    """A source answered in a way that retrying will not fix, or never answered after retries."""


class _RetryableStatusError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _RetryableStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.TransportError):
        return f"connection failed ({type(exc).__name__})"
    return type(exc).__name__


def _reason(response: httpx.Response, secrets: Sequence[str] = ()) -> str:
    """The reason a JSON API gave for refusing a request (`reason`, `message` or `error` as
    text), as `: reason`, redacted (the client's own credentials too, should the server echo
    them) and on one line; empty when it gave none."""
    try:
        body = response.json()
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
    """GET JSON with retries. `name` (the source's name) labels every error."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float = 30.0,
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
        self.attempts_made = 0
        self._current_url = ""
        self._client = httpx.Client(
            base_url=base_url,
            headers=dict(headers or {}),
            timeout=timeout_seconds,
            transport=transport,
            follow_redirects=False,
        )
        self.origin = origin(str(self._client.base_url))

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

    def _get_following_redirects(
        self, path: str, params: Mapping[str, Any] | None, url: str
    ) -> httpx.Response:
        response = self._client.get(path, params=params)
        for _ in range(MAX_REDIRECTS):
            location = response.headers.get("location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                return response
            target = response.url.join(location)
            if not same_site(self.origin, str(target)):
                raise SourceError(
                    f"{self.name} at {self.origin} redirected GET {url} to another host, "
                    f"{origin(redact(str(target)))}; credentials are only sent to the configured "
                    "origin: use the final address as the URL if that host is right"
                )
            response = self._client.get(target)
        if response.status_code in REDIRECT_STATUSES:
            raise SourceError(
                f"{self.name} redirected GET {url} more than {MAX_REDIRECTS} times "
                "(a redirect loop): check the configured URL"
            )
        return response

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        url = redact(str(self._client.base_url.join(path.lstrip("/"))))
        self._current_url = url

        def attempt() -> httpx.Response:
            self.attempts_made += 1
            response = self._get_following_redirects(path, params, url)
            if response.status_code in RETRY_STATUSES:
                raise _RetryableStatusError(response)
            return response

        retrying = Retrying(
            retry=retry_if_exception(
                lambda e: isinstance(e, _RetryableStatusError | httpx.TransportError)
            ),
            stop=stop_after_attempt(self.policy.max_attempts),
            wait=self._wait,
            reraise=True,
        )
        try:
            response = retrying(attempt)
        except (_RetryableStatusError, httpx.TransportError) as exc:
            raise SourceError(
                f"{self.name} unavailable: GET {url} {_describe(exc)} "
                f"after {self.policy.max_attempts} attempts"
            ) from None
        if response.status_code in (401, 403):
            hint = f": {self.credentials_hint}" if self.credentials_hint else ""
            raise SourceError(
                f"{self.name} rejected the credentials (GET {url} returned HTTP "
                f"{response.status_code}){hint}"
            )
        if response.is_error:
            raise SourceError(
                f"{self.name} error: GET {url} returned HTTP {response.status_code}"
                f"{_reason(response, self._secrets)}"
            )
        try:
            return response.json()
        except ValueError:
            raise SourceError(
                f"{self.name} answered GET {url} with something that is not JSON"
            ) from None
