"""The Nightscout location's own settings: its site, credentials and limits.

Read like the core's (environment and `.env`, one-line errors naming the variable) through
`phlo_core.settings.load_location_settings`.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from phlo_core.redact import has_userinfo, redact
from phlo_core.settings import LocationSettings, PhloSettings, load_location_settings


class NightscoutSettings(LocationSettings):
    nightscout_url: Annotated[str | None, NoDecode] = None
    nightscout_api_secret: SecretStr | None = None
    nightscout_token: SecretStr | None = None
    nightscout_reading_interval_minutes: int = Field(default=5, ge=1, le=60)
    nightscout_page_size: int = Field(default=1000, ge=1, le=100_000)
    nightscout_max_rejected_pct: float = Field(default=5.0, ge=0, le=100)

    @field_validator("nightscout_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if has_userinfo(value.strip()):  # first, and without the value: it holds a secret
            raise ValueError(
                "the URL carries a user name or password (value not shown): remove it and put "
                "the credential in NIGHTSCOUT_API_SECRET or NIGHTSCOUT_TOKEN"
            )
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"{redact(value)!r} is not an http(s) URL (e.g. 'https://my-site.example')"
            )
        return value.strip().rstrip("/")


def nightscout_settings(settings: PhloSettings) -> NightscoutSettings:
    return load_location_settings(NightscoutSettings, settings)
