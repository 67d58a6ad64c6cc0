"""The example source's client, as the Dagster resource `example_source`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from locations.example.settings import ExampleSettings, example_settings
from phlo_core.http import RetryingClient, SourceError
from phlo_core.resources import SettingsResource
from phlo_core.settings import SettingsError

EVENTS_PATH = "/v1/events"


class ExampleSource(SettingsResource):
    """The location's settings and a client for its source, from the run's settings."""

    @property
    def own(self) -> ExampleSettings:
        return example_settings(self.settings)

    def url(self) -> str:
        """The source's base URL; SettingsError (a usage error) when it is not set."""
        if not self.own.example_url.strip():
            raise SettingsError("EXAMPLE_URL is not set: the example source's base URL")
        return self.own.example_url

    def client(self) -> RetryingClient:
        return RetryingClient.from_settings("example source", self.url(), self.settings)

    def events(self, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
        """The events at instants in [start, end)."""
        with self.client() as client:
            body = client.get_json(
                EVENTS_PATH, params={"start": start.isoformat(), "end": end.isoformat()}
            )
        if not isinstance(body, dict) or not isinstance(body.get("events"), list):
            raise SourceError(f"the example source's {EVENTS_PATH} answered without events")
        return body["events"]
