"""The Nightscout client against a real HTTP server speaking Nightscout's v1 API."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from zoneinfo import ZoneInfo

import pytest

from locations.nightscout.client import NightscoutClient, NightscoutConfigError
from locations.nightscout.sample_data import _entry
from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.calendar import DayRange, epoch_ms, utc_bounds
from phlo_core.http import RetryingClient, RetryPolicy, SourceError
from phlo_core.settings import PhloSettings, SettingsError, load_settings
from tests.conftest import TEST_SECRET

NEW_YORK = ZoneInfo("America/New_York")
DAY = DayRange(dt.date(2024, 1, 15), dt.date(2024, 1, 16))
START_MS, END_MS = (epoch_ms(t) for t in utc_bounds(DAY, NEW_YORK))
FAST = RetryPolicy(max_attempts=3, backoff_seconds=0.01, max_backoff_seconds=0.05)


def one_minute_sensor(lo: int, hi: int):
    """A 1-minute sensor: 1,440 readings a day."""
    first = max(lo, START_MS)
    for ms in range(first - first % 60_000 + 7_000, min(hi, END_MS), 60_000):
        if ms >= lo:
            yield _entry(ms, NEW_YORK, "libre3", 120 + (ms // 60_000) % 40)


def test_pages_until_the_day_is_complete() -> None:
    with SampleNightscoutServer(timezone="America/New_York", entries=one_minute_sensor) as server:
        client = NightscoutClient(server.url, page_size=500, policy=FAST)
        result = client.fetch_entries(START_MS, END_MS)
    assert len(result.entries) == 1440
    assert len({e["_id"] for e in result.entries}) == 1440
    assert result.pages == 4  # 500 + 499 + 441 new, then a page with nothing new
    assert min(e["date"] for e in result.entries) >= START_MS
    assert max(e["date"] for e in result.entries) < END_MS


def test_a_server_that_caps_the_page_size_still_gives_the_whole_day() -> None:
    with SampleNightscoutServer(entries=one_minute_sensor, max_count=300) as server:
        result = NightscoutClient(server.url, page_size=1000, policy=FAST).fetch_entries(
            START_MS, END_MS
        )
    assert len({e["_id"] for e in result.entries}) == 1440


def test_api_secret_is_sent_as_its_sha1(nightscout: SampleNightscoutServer) -> None:
    client = NightscoutClient(nightscout.url, api_secret=TEST_SECRET, policy=FAST)
    entries = client.fetch_entries(START_MS, END_MS).entries
    assert 250 < len([e for e in entries if e["type"] == "sgv"]) <= 300


def test_token_auth() -> None:
    with SampleNightscoutServer(timezone="America/New_York", token="reader-abc") as server:
        client = NightscoutClient(server.url, token="reader-abc", policy=FAST)
        assert client.fetch_entries(START_MS, END_MS).entries


def test_a_wrong_secret_is_a_clear_error_that_does_not_leak_it(
    nightscout: SampleNightscoutServer,
) -> None:
    client = NightscoutClient(nightscout.url, api_secret="wrong-secret", policy=FAST)
    with pytest.raises(SourceError) as error:
        client.fetch_entries(START_MS, END_MS)
    message = str(error.value)
    assert "rejected the credentials" in message
    assert "NIGHTSCOUT_API_SECRET" in message
    assert "wrong-secret" not in message
    assert len(nightscout.requests) == 1  # 401 is not retried


def test_a_wrong_token_does_not_leak_into_the_error() -> None:
    with SampleNightscoutServer(token="right") as server:
        client = NightscoutClient(server.url, token="wrong-token-xyz", policy=FAST)
        with pytest.raises(SourceError) as error:
            client.fetch_entries(START_MS, END_MS)
    assert "wrong-token-xyz" not in str(error.value)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_retries_transient_statuses(nightscout: SampleNightscoutServer, status: int) -> None:
    nightscout.fail_next(2, status=status)
    client = NightscoutClient(nightscout.url, api_secret=TEST_SECRET, policy=FAST)
    result = client.fetch_entries(START_MS, END_MS)
    assert result.entries
    assert len(nightscout.requests) == 2 + result.pages


def test_retries_timeouts(nightscout: SampleNightscoutServer) -> None:
    nightscout.fail_next(1, status=200, stall_seconds=1.5)
    client = NightscoutClient(
        nightscout.url, api_secret=TEST_SECRET, timeout_seconds=0.5, policy=FAST
    )
    result = client.fetch_entries(START_MS, END_MS)
    assert result.entries
    assert len(nightscout.requests) == 1 + result.pages


def test_gives_up_after_the_last_attempt_with_a_clear_error(
    nightscout: SampleNightscoutServer,
) -> None:
    nightscout.fail_next(5, status=502)
    client = NightscoutClient(nightscout.url, api_secret=TEST_SECRET, policy=FAST)
    with pytest.raises(SourceError, match=r"Nightscout unavailable: .* HTTP 502 after 3 attempts"):
        client.fetch_entries(START_MS, END_MS)


def test_a_server_that_is_down_is_a_clear_error() -> None:
    client = NightscoutClient("http://127.0.0.1:9", policy=FAST)
    with pytest.raises(SourceError, match="connection failed"):
        client.fetch_entries(START_MS, END_MS)


def test_a_day_with_no_data() -> None:
    with SampleNightscoutServer(entries=lambda lo, hi: iter(())) as server:
        result = NightscoutClient(server.url, policy=FAST).fetch_entries(START_MS, END_MS)
    assert result.entries == []
    assert result.pages == 1


def test_missing_url_names_the_variable() -> None:
    with pytest.raises(NightscoutConfigError, match="NIGHTSCOUT_URL"):
        NightscoutClient.from_settings(load_settings())


def test_a_redirect_to_another_host_is_an_error_and_sends_it_no_credentials(
    nightscout: SampleNightscoutServer,
) -> None:
    with (
        SampleNightscoutServer(api_secret=TEST_SECRET) as elsewhere,
        SampleNightscoutServer(redirect_to=elsewhere.url.replace("127.0.0.1", "localhost")) as hop,
    ):
        client = NightscoutClient(hop.url, api_secret=TEST_SECRET, token="tok-1", policy=FAST)
        with pytest.raises(SourceError) as error:
            client.fetch_entries(START_MS, END_MS)
        assert elsewhere.requests == []
    message = str(error.value)
    assert hop.url in message
    assert elsewhere.url.replace("127.0.0.1", "localhost") in message
    assert TEST_SECRET not in message and "tok-1" not in message


def test_a_redirect_within_the_origin_is_followed() -> None:
    with SampleNightscoutServer(timezone="America/New_York", api_secret=TEST_SECRET) as site:
        site.redirect_to = site.url + "/moved"
        client = NightscoutClient(site.url, api_secret=TEST_SECRET, policy=FAST)
        entries = client.fetch_entries(START_MS, END_MS).entries
    assert 250 < len([e for e in entries if e["type"] == "sgv"]) <= 300
    assert "/moved/api/v1/entries.json" in site.requests


def test_a_redirect_loop_names_the_source_and_the_url() -> None:
    with SampleNightscoutServer() as loop:
        loop.redirect_to = loop.url
        client = NightscoutClient(loop.url, policy=FAST)
        with pytest.raises(SourceError) as error:
            client.fetch_entries(START_MS, END_MS)
    message = str(error.value)
    assert "Nightscout" in message and loop.url in message and "redirect" in message


def test_a_server_that_echoes_the_credentials_in_its_reason_does_not_leak_them() -> None:
    """Some servers repeat what they were sent in their error text; phlo shows it as ***."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    class Echo(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            token = parse_qs(urlsplit(self.path).query).get("token", [""])[0]
            sent = self.headers.get("api-secret", "")
            body = json.dumps({"reason": f"token {token} and secret {sent} are not valid"})
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client = NightscoutClient(url, api_secret="plain-secret-1", token="tok-secret-2")
        with pytest.raises(SourceError) as error:
            client.fetch_entries(0, 1000)
    finally:
        server.shutdown()
    message = str(error.value)
    assert "are not valid" in message and "token *** and secret ***" in message
    assert "tok-secret-2" not in message
    assert hashlib.sha1(b"plain-secret-1").hexdigest() not in message


@pytest.mark.parametrize(
    "url",
    [
        # httpx reads `hunter` as the port and says "Invalid port: 'hunter'".
        "https://reader:hunter/2abc@ns.example",
        # A port it can read: the rest of the password rides in the path of every error.
        "https://reader:12/2abc@ns.example",
    ],
)
def test_a_url_hiding_a_password_is_refused_without_showing_it(
    url: str, make_settings: Callable[..., PhloSettings]
) -> None:
    settings = make_settings(nightscout_url=url)
    # Refused where the settings load (NIGHTSCOUT_URL), or by the client if they were bypassed.
    with (
        pytest.raises((SourceError, SettingsError)) as error,
        NightscoutClient.from_settings(settings) as client,
    ):
        client.fetch_entries(START_MS, END_MS)
    message = str(error.value)
    assert "NIGHTSCOUT_URL" in message and "\n" not in message
    for part in ("hunter", "2abc", "12/"):
        assert part not in message


@pytest.mark.parametrize(
    "url", ["https://reader:hunter/2abc@ns.example", "https://reader:12/2abc@ns.example"]
)
def test_the_http_client_itself_refuses_a_url_hiding_a_password(url: str) -> None:
    """The second line of defence, for a URL that did not come through the settings."""
    with pytest.raises(SourceError) as error:
        RetryingClient("Nightscout", url)
    message = str(error.value)
    assert message.startswith("Nightscout") and "\n" not in message
    for part in ("hunter", "2abc", "12/"):
        assert part not in message
