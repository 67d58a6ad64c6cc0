"""Nightscout v1 entries client: one local day (or range) of entries, paged to completion.

Nightscout answers newest first, `count` entries at a time, and has no offset parameter, so the
client pages by moving the upper bound of the date window down to the oldest entry seen
(inclusive, de-duplicated by `_id`, so entries sharing a timestamp across a page boundary are
not lost) until a page brings no new entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from locations.nightscout.settings import NightscoutSettings, nightscout_settings
from phlo_core.http import RetryingClient, RetryPolicy, SourceError, http_options
from phlo_core.resources import SettingsResource
from phlo_core.settings import (
    DEFAULT_HTTP_DEADLINE_SECONDS,
    DEFAULT_HTTP_MAX_RESPONSE_MB,
    PhloSettings,
)

ENTRIES_PATH = "/api/v1/entries.json"


class NightscoutConfigError(ValueError):
    """Nightscout is not configured; the message names the variable to set."""


def configured_url(site: NightscoutSettings) -> str:
    """NIGHTSCOUT_URL, or NightscoutConfigError saying how to set it."""
    if not site.nightscout_url:
        raise NightscoutConfigError(
            "NIGHTSCOUT_URL is not set: point it at your Nightscout site "
            "(e.g. https://my-site.example), or run `phlo demo` for sample data"
        )
    return site.nightscout_url


@dataclass
class FetchResult:
    entries: list[dict] = field(default_factory=list)
    pages: int = 0
    requests: int = 0


class NightscoutClient:
    def __init__(
        self,
        url: str,
        *,
        api_secret: str | None = None,
        token: str | None = None,
        page_size: int = 1000,
        timeout_seconds: float = 30.0,
        deadline_seconds: float = DEFAULT_HTTP_DEADLINE_SECONDS,
        max_response_mb: float = DEFAULT_HTTP_MAX_RESPONSE_MB,
        policy: RetryPolicy | None = None,
    ) -> None:
        headers = {"Accept": "application/json"}
        hashed = hashlib.sha1(api_secret.encode()).hexdigest() if api_secret else ""
        if hashed:
            headers["api-secret"] = hashed
        self._token = token
        self.page_size = page_size
        self._http = RetryingClient(
            "Nightscout",
            url,
            headers=headers,
            timeout_seconds=timeout_seconds,
            deadline_seconds=deadline_seconds,
            max_response_mb=max_response_mb,
            policy=policy,
            credentials_hint="check NIGHTSCOUT_API_SECRET or NIGHTSCOUT_TOKEN"
            if api_secret or token
            else "the site needs NIGHTSCOUT_API_SECRET or NIGHTSCOUT_TOKEN",
            secrets=[value for value in (api_secret, hashed, token) if value],
        )

    @classmethod
    def from_settings(cls, settings: PhloSettings) -> NightscoutClient:
        """A client for the configured site (its settings plus the core's HTTP settings)."""
        site = nightscout_settings(settings)
        return cls(
            configured_url(site),
            api_secret=(
                site.nightscout_api_secret.get_secret_value()
                if site.nightscout_api_secret
                else None
            ),
            token=site.nightscout_token.get_secret_value() if site.nightscout_token else None,
            page_size=site.nightscout_page_size,
            **http_options(settings),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NightscoutClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fetch_entries(self, start_ms: int, end_ms: int) -> FetchResult:
        """Every entry with start_ms <= date < end_ms, newest first."""
        result = FetchResult()
        seen: set[str] = set()
        upper_op, upper = "$lt", end_ms
        while True:
            params: dict[str, str | int] = {
                "count": self.page_size,
                "find[date][$gte]": start_ms,
                f"find[date][{upper_op}]": upper,
            }
            if self._token:
                params["token"] = self._token
            page = self._http.get_json(ENTRIES_PATH, params=params)
            if not isinstance(page, list):
                raise SourceError(
                    "Nightscout answered the entries request with something other than a list"
                )
            result.pages += 1
            fresh = [e for e in page if isinstance(e, dict) and str(e.get("_id")) not in seen]
            for entry in fresh:
                seen.add(str(entry.get("_id")))
            result.entries.extend(fresh)
            dates = [e["date"] for e in fresh if isinstance(e.get("date"), int | float)]
            # A short page does not prove the day is done: servers may cap `count` below what
            # was asked. Page until a page brings nothing new.
            if not dates:
                break
            upper_op, upper = "$lte", int(min(dates))
        result.requests = self._http.attempts_made
        return result


class NightscoutSource(SettingsResource):
    """The Dagster resource `nightscout`: the site's settings and a client for them, read from
    the run's settings (phlo's command, or the environment of a run Dagster launched)."""

    @property
    def site(self) -> NightscoutSettings:
        return nightscout_settings(self.settings)

    def client(self) -> NightscoutClient:
        return NightscoutClient.from_settings(self.settings)
