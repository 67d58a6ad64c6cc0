"""Phlo's configuration: one pydantic-settings object read from the environment and `.env`.

No other module reads `os.environ` for settings; everything that needs a path, a timezone or a
credential asks `get_settings()`.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from phlo_core.redact import has_userinfo, redact


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the variable and says what is valid."""


class PhloSettings(BaseSettings):
    """What every location shares. A location's own settings (its source's URL, credentials,
    limits) are a model beside its code (`load_location_settings`); values given here by
    name for such a setting (tests, the demo) are passed on to that model, never shown."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="allow",
        case_sensitive=False,
    )

    def __repr_args__(self) -> Any:
        # Values meant for a location's model may be credentials: the repr shows fields only.
        return [(k, v) for k, v in super().__repr_args__() if k in type(self).model_fields]

    phlo_home: Path = Field(default=Path(".phlo"), description="Everything local lives here.")
    phlo_timezone: str = Field(default="UTC", description="IANA zone; a partition is a local day.")
    phlo_partition_start: Annotated[dt.date, NoDecode] = Field(default=dt.date(2024, 1, 1))
    phlo_lake_catalog: str | None = Field(
        default=None,
        description="DuckLake catalog: 'sqlite:PATH' (default under PHLO_HOME) or 'postgres:DSN'.",
    )
    phlo_lake_data_path: str | None = Field(
        default=None, description="Folder or s3:// URL for the lake's Parquet files."
    )
    dagster_home: Path | None = None
    phlo_workspace: Path | None = Field(
        default=None, description="Dagster workspace file listing the code locations."
    )

    phlo_debug: bool = Field(default=False, description="Show tracebacks from the CLI.")

    phlo_query_memory_limit_mb: int = Field(default=4096, ge=64)
    phlo_query_timeout_seconds: float = Field(default=60.0, gt=0)
    phlo_snapshot_retention_days: int = Field(default=7, ge=0)
    phlo_max_shrink_pct: float = Field(default=50.0, ge=0, le=100)
    phlo_allow_shrink: bool = False

    http_timeout_seconds: float = Field(default=30.0, gt=0)
    http_max_attempts: int = Field(default=5, ge=1, le=20)
    http_backoff_seconds: float = Field(default=1.0, ge=0)

    @field_validator("phlo_timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. 'Europe/Oslo')") from exc
        return value

    @field_validator("phlo_partition_start", mode="before")
    @classmethod
    def _iso_day(cls, value: object) -> object:
        if isinstance(value, str):
            from phlo_core.calendar import PartitionError, parse_day

            try:
                return parse_day(value)
            except PartitionError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("phlo_lake_data_path")
    @classmethod
    def _no_credentials_in_data_path(cls, value: str | None) -> str | None:
        if value is not None and has_userinfo(value):
            raise ValueError(
                f"{redact(value)!r} carries credentials: object-store keys go in their own "
                "settings, never in the path"
            )
        return value

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.phlo_timezone)

    @property
    def home(self) -> Path:
        return self.phlo_home.expanduser().resolve()

    @property
    def resolved_dagster_home(self) -> Path:
        if self.dagster_home is not None:
            return self.dagster_home.expanduser().resolve()
        return self.home / "dagster"

    @property
    def lake_catalog(self) -> str:
        return self.phlo_lake_catalog or f"sqlite:{self.home / 'lake' / 'catalog.sqlite'}"

    @property
    def lake_data_path(self) -> str:
        path = self.phlo_lake_data_path or str(self.home / "lake" / "data")
        return path if path.endswith("/") else path + "/"

    @property
    def lake_moves_with_home(self) -> bool:
        """Catalog and data files both in their default places under PHLO_HOME."""
        return self.phlo_lake_catalog is None and self.phlo_lake_data_path is None

    @property
    def extension_directory(self) -> Path:
        return self.home / "duckdb_extensions"

    @property
    def dbt_dir(self) -> Path:
        return self.home / "dbt"


def check_home(settings: PhloSettings) -> Path:
    """PHLO_HOME as a writable folder (created if missing), or a SettingsError saying why not."""
    home = settings.home
    if home.exists() and not home.is_dir():
        raise SettingsError(f"PHLO_HOME={home} is a file: point PHLO_HOME at a folder")
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / f".phlo-write-check-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise SettingsError(
            f"PHLO_HOME={home} is not usable as Phlo's home folder: {exc.strerror or exc}"
        ) from None
    return home


def _one_line(exc: ValidationError) -> SettingsError:
    """pydantic's multi-line report as one line naming each variable."""
    problems = []
    for error in exc.errors():
        variable = str(error["loc"][0]).upper() if error["loc"] else "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{variable}: {message}")
    return SettingsError("invalid configuration: " + "; ".join(problems))


def load_settings(**overrides: object) -> PhloSettings:
    """Build settings, turning pydantic's multi-line report into one line naming the variable."""
    try:
        return PhloSettings(**overrides)  # pyright: ignore[reportArgumentType]
    except ValidationError as exc:
        raise _one_line(exc) from None


LocationModel = TypeVar("LocationModel", bound=BaseSettings)


def load_location_settings(model: type[LocationModel], settings: PhloSettings) -> LocationModel:
    """A location's own settings model, read from the environment and `.env` like the core's,
    with the values `settings` was given for its fields by name; SettingsError on one line."""
    given = {
        name: value
        for name, value in (settings.model_extra or {}).items()
        if name in model.model_fields
    }
    try:
        return model(**given)
    except ValidationError as exc:
        raise _one_line(exc) from None


def with_overrides(settings: PhloSettings, **updates: object) -> PhloSettings:
    """A validated copy of `settings` with some values replaced (the environment is not read)."""
    try:
        return PhloSettings.model_validate({**settings.model_dump(), **updates})
    except ValidationError as exc:
        raise SettingsError(f"invalid configuration: {exc.errors()[0]['msg']}") from None


_active: PhloSettings | None = None


def get_settings() -> PhloSettings:
    """The process's settings: from the environment on first use, or what `use_settings` set."""
    global _active
    if _active is None:
        _active = load_settings()
    return _active


def use_settings(settings: PhloSettings | None) -> None:
    """Make `settings` the process's settings (None: read the environment again on next use)."""
    global _active
    _active = settings
