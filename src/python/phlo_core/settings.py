"""Phlo's configuration: one pydantic-settings object read from the environment and `.env`.

No other module reads `os.environ` for settings; everything that needs a path, a timezone or a
credential asks `get_settings()`. (`setting_sources` says where settings come from, and reads one
value from there without pydantic for the warm server's client.)
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from phlo_core.redact import dsn_password, redact, register_secret
from phlo_core.setting_sources import (
    DEFAULT_HOME,
    DOTENV,
    env_files,
    services_env,
)

# A source request's total time and answer size (HTTP_DEADLINE_SECONDS, HTTP_MAX_RESPONSE_MB):
# far above what a healthy source needs (a page of 100,000 JSON readings is ~30 MB), far
# below what lets one misbehaving server hold a run or its memory.
DEFAULT_HTTP_DEADLINE_SECONDS = 120.0
DEFAULT_HTTP_MAX_RESPONSE_MB = 100.0


# How PHLO_DAGSTER_POSTGRES_URL begins when runs start in containers of their own
# (PHLO_RUN_LAUNCHER=docker): they read it from their environment as it is.
DOCKER_RUNS_URL_SCHEME = "postgresql+psycopg2://"


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the variable and says what is valid."""


# How to write a password into a URL, said wherever a URL is refused for one.
_PERCENT_ENCODE = (
    "percent-encode the password (and user name): '@' as %40, '/' as %2F, '?' as %3F, "
    "'#' as %23, '%' as %25"
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}")
# Kinds named back when written without `://` (`mysql:...`): anything else before a colon
# may be a user name or a password, and is not shown.
_KNOWN_KINDS = frozenset({"duckdb", "file", "http", "https", "mysql", "pg", "postgresql", "s3"})


def _scheme_of(value: str) -> str:
    """The scheme of a URL-like value, for a message that must not quote the rest of it
    ('' when there is none worth naming)."""
    scheme, sep, _ = value.partition("://")
    if sep:
        return scheme if _SCHEME.fullmatch(scheme) else ""
    kind = value.partition(":")[0]
    return kind if kind.lower() in _KNOWN_KINDS else ""


# libpq's connection keywords (PostgreSQL 12 to 18). A key=value catalog DSN or a URL query
# with any other key is refused without naming it: such a "key" is usually the tail of a
# password holding a space or '&', and libpq's own error would quote it.
# fmt: off
_LIBPQ_KEYWORDS = frozenset({
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "require_auth",
    "channel_binding", "connect_timeout", "client_encoding", "options", "application_name",
    "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "tcp_user_timeout", "replication", "gssencmode", "sslmode",
    "sslnegotiation", "requiressl", "sslcompression", "sslcert", "sslkey", "sslcertmode",
    "sslpassword", "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "min_protocol_version",
    "max_protocol_version", "krbsrvname", "gsslib", "gssdelegation", "service",
    "target_session_attrs", "load_balance_hosts", "scram_client_key", "scram_server_key",
    "oauth_issuer", "oauth_client_id", "oauth_client_secret", "oauth_scope"
})
# fmt: on


def _postgres_url_problem(url: str) -> str | None:
    """Why a driver could misread the PostgreSQL URL `url` (None when none would), in words
    that quote none of it.

    Parsers disagree on where a URL's user information ends: libpq and SQLAlchemy (Dagster's
    storage) at the FIRST '@', libpq even across '?', SQLAlchemy across '/' and '?', Python's
    urlsplit at the last '@' before the first '/', '?' or '#'. A password holding any of these
    unencoded is cut somewhere, its tail lands in the host name, port, database or a query
    parameter, and the driver's error quotes it (`could not translate host name
    "<tail>@127.0.0.1"`). So '@' may appear once, between the user information and the host,
    and libpq's own refusals that quote a part (a bad %-escape, a port that is no number, a
    query parameter it does not know) are made here first, quoting nothing."""
    _, sep, rest = url.partition("://")
    if not sep:
        return "it is not a URL (postgresql:// followed by user:password@host:port/db)"
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    if netloc.count("@") > 1:
        return "its user name or password holds an unencoded '@'"
    if "@" in tail:
        return "it holds an '@' after the host (a password holding '/', '?' or '#' is cut there)"
    userinfo, _, hosts = netloc.rpartition("@")
    if "[" in userinfo or "]" in userinfo:
        return "its user name or password holds an unencoded '[' or ']'"
    if re.search(r"%(?![0-9A-Fa-f]{2})|%00", url):
        return "it holds a '%' that is not a %XX escape"
    for host in hosts.split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        port = port.partition(":")[2]
        if port and not port.isdigit():
            return "its port is not a number"
    query = tail.partition("?")[2]
    for field in query.split("&") if query else ():
        key, equals, value = field.partition("=")
        if not equals or "=" in value or key not in _LIBPQ_KEYWORDS:
            return (
                "a query parameter is not key=value with a libpq key ('&' and '=' in a value "
                "are written %26 and %3D)"
            )
    return None


def _conninfo_problem(dsn: str) -> str | None:
    """Why libpq would refuse the key=value DSN `dsn` with an error quoting part of it (None
    when it would not), in words that quote none of it. Follows libpq's conninfo_parse:
    `key = value`, a value single-quoted (with \\' and \\\\) when it holds spaces."""
    i, n = 0, len(dsn)
    while True:
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n:
            return None
        start = i
        while i < n and dsn[i] != "=" and not dsn[i].isspace():
            i += 1
        key = dsn[start:i]
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n or dsn[i] != "=":
            return (
                "a word is not key=value: a value holding spaces must be single-quoted "
                "('...', with \\' and \\\\ escaped)"
            )
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        if i < n and dsn[i] == "'":
            i += 1
            while i < n and dsn[i] != "'":
                i += 2 if dsn[i] == "\\" else 1
            if i >= n:
                return "a quoted value is not closed (a quote inside one is written \\')"
            i += 1
        else:
            while i < n and not dsn[i].isspace():
                i += 2 if dsn[i] == "\\" else 1
        if key not in _LIBPQ_KEYWORDS:
            return (
                "it names a key libpq does not know (is a value holding spaces not single-quoted?)"
            )


def _register_password(dsn: str) -> None:
    """Mask the password of a DSN or URL in every later message, as written and as drivers
    read it (a URL's %-escapes decoded)."""
    password = dsn_password(dsn)
    register_secret(password)
    if password is not None and "://" in dsn:
        register_secret(unquote(password))


class LocationSettings(BaseSettings):
    """The base of a location's own settings model (its source's URL, credentials, limits), in
    the location's `settings.py`: read from the environment and `.env` as the core's are (the
    environment first), with the same one-line errors (`load_location_settings`)."""

    model_config = SettingsConfigDict(
        env_file=DOTENV, env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )


class PhloSettings(BaseSettings):
    """What every location shares. A location's own settings are its `LocationSettings` model;
    values given by name for such a setting (`load_settings(<source>_url=...)`: tests, the
    demo) are kept apart (`location_values`) and passed on to that model, never shown. A name
    that is neither phlo's nor any location's is an error; other variables of `.env` are not
    phlo's business and are ignored."""

    model_config = SettingsConfigDict(
        env_file=DOTENV,
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )
    _location_values: dict[str, object] = PrivateAttr(default_factory=dict)

    def __repr_args__(self) -> Any:
        # A catalog DSN without its password; the values given for locations are not shown.
        return [(k, redact(v) if isinstance(v, str) else v) for k, v in super().__repr_args__()]

    @property
    def location_values(self) -> dict[str, object]:
        """The values given by name for the locations' settings (not those of the environment
        or `.env`, which each location's model reads itself)."""
        return dict(self._location_values)

    phlo_home: Path = Field(default=DEFAULT_HOME, description="Everything local lives here.")
    phlo_timezone: str = Field(default="UTC", description="IANA zone; a partition is a local day.")
    phlo_partition_start: Annotated[dt.date, NoDecode] = Field(default=dt.date(2024, 1, 1))
    phlo_lake_catalog: str | None = Field(
        default=None,
        description="DuckLake catalog: 'sqlite:PATH' (default under PHLO_HOME) or 'postgres:DSN'.",
    )
    phlo_lake_data_path: str | None = Field(
        default=None, description="Folder or s3:// URL for the lake's Parquet files."
    )
    phlo_s3_endpoint: str | None = Field(
        default=None,
        description="S3-compatible server as host:port or http(s)://host:port; unset: AWS S3.",
    )
    phlo_s3_access_key_id: str | None = None
    phlo_s3_secret_access_key: SecretStr | None = None
    phlo_s3_region: str = "us-east-1"
    phlo_s3_use_ssl: bool = True
    phlo_s3_url_style: Literal["path", "vhost"] = "path"
    phlo_dagster_postgres_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL for Dagster's runs, events and schedules; unset: SQLite files.",
    )
    phlo_publish_postgres_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL the marts are published to (schema marts); unset: not published.",
    )
    phlo_run_launcher: Literal["process", "docker"] = Field(
        default="process",
        description=(
            "Where Dagster's daemon and UI launch runs: 'process' (a process of the location's "
            "code server) or 'docker' (a container each from PHLO_RUN_IMAGE)."
        ),
    )
    phlo_run_image: str | None = Field(
        default=None, description="The image runs start from with PHLO_RUN_LAUNCHER=docker."
    )
    phlo_max_concurrent_runs: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Runs Dagster's queue lets run at once (the production instance).",
    )
    phlo_runs_per_location: int = Field(
        default=2,
        ge=1,
        le=1000,
        description=(
            "Runs of one code location at once: a backfill cannot hammer the location's source."
        ),
    )
    phlo_run_tag_limits: str = Field(
        default="",
        description=(
            "More limits on the queue, comma-separated: 'KEY:N' (runs with the tag), "
            "'KEY=VALUE:N' (with that value), 'KEY=*:N' (per value)."
        ),
    )
    phlo_backfill_days_per_run: int = Field(
        default=31,
        ge=1,
        le=3660,
        description=(
            "Days one run of a backfill Dagster makes covers (the daemon's, the UI's); its runs "
            "go at once within the queue's limits. Read when the definitions load."
        ),
    )
    phlo_executor: Literal["in_process", "celery"] = Field(
        default="in_process",
        description=(
            "Where the steps of runs Dagster launches execute: in the run's process, or on "
            "Celery workers (`phlo worker start`) through PHLO_CELERY_BROKER_URL."
        ),
    )
    phlo_celery_broker_url: SecretStr | None = Field(
        default=None,
        description="The Celery broker (a redis:// URL with its password); `phlo services up "
        "--with workers` starts one.",
    )
    datahub_gms_url: str | None = Field(
        default=None,
        description="A DataHub server (GMS) `phlo catalog sync` also pushes to; unset: Lite only.",
    )
    datahub_token: SecretStr | None = Field(
        default=None, description="DataHub personal access token for DATAHUB_GMS_URL."
    )
    dagster_home: Path | None = None
    phlo_workspace: Path | None = Field(
        default=None, description="Dagster workspace file listing the code locations."
    )

    phlo_debug: bool = Field(
        default=False,
        description="Show tracebacks from the CLI; dbt writes its debug log (every statement).",
    )

    # DuckDB's threads per process; unset: see `duckdb_threads`.
    phlo_duckdb_threads: int | None = Field(default=None, ge=1, le=256)
    phlo_query_memory_limit_mb: int = Field(default=4096, ge=64)
    phlo_query_timeout_seconds: float = Field(default=60.0, gt=0)
    phlo_snapshot_retention_days: int = Field(default=7, ge=0)
    phlo_max_shrink_pct: float = Field(default=50.0, ge=0, le=100)
    phlo_allow_shrink: bool = False

    http_timeout_seconds: float = Field(default=30.0, gt=0)
    http_max_attempts: int = Field(default=5, ge=1, le=20)
    http_backoff_seconds: float = Field(default=1.0, ge=0)
    # Per request (each attempt, redirects included): a server trickling its answer, or
    # sending more than any source's page, cannot keep a run alive or fill its memory.
    http_deadline_seconds: float = Field(default=DEFAULT_HTTP_DEADLINE_SECONDS, gt=0, le=86_400)
    http_max_response_mb: float = Field(default=DEFAULT_HTTP_MAX_RESPONSE_MB, gt=0, le=16_384)

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
        # Any '@' in a URL counts (no bucket name holds one): an S3 secret key may hold '/',
        # which ends what urlsplit and redact() take for the user information, so the key
        # would pass as a path and show. The value is never quoted back.
        if value is not None and "://" in value and "@" in value:
            raise ValueError(
                "carries credentials (value not shown): object-store keys go in "
                "PHLO_S3_ACCESS_KEY_ID and PHLO_S3_SECRET_ACCESS_KEY, never in the path"
            )
        return value

    @field_validator("phlo_lake_catalog")
    @classmethod
    def _known_catalog_kind(cls, value: str | None) -> str | None:
        """A catalog of a known kind; a PostgreSQL one as libpq will read it (see
        `_postgres_url_problem`). Refusals name the kind at most, never the rest."""
        if value is None or value.startswith("sqlite:"):
            return value
        if not value.startswith("postgres:"):
            kind = _scheme_of(value)
            shown = f"{kind!r} is not a DuckLake catalog kind" if kind else "not a catalog"
            raise ValueError(
                f"{shown}: use 'sqlite:PATH' or 'postgres:dbname=... host=... user=...'"
            )
        dsn = value.removeprefix("postgres:").strip()
        if "://" in dsn:
            problem = _postgres_url_problem(dsn)
            if problem:
                raise ValueError(f"{problem} (value not shown): {_PERCENT_ENCODE}")
        else:
            problem = _conninfo_problem(dsn)
            if problem:
                raise ValueError(f"{problem} (value not shown)")
        return value

    @field_validator("phlo_dagster_postgres_url", "phlo_publish_postgres_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        """A PostgreSQL URL libpq reads as meant, or a refusal that quotes none of it (the
        scheme at most): a password never shows, cut where it holds a reserved character."""
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value().strip()
        if not url.startswith(("postgresql://", "postgres://", "postgresql+psycopg2://")):
            scheme = _scheme_of(url)
            shown = f"a {scheme!r} URL" if scheme else "the value"
            raise ValueError(
                f"{shown} is not a PostgreSQL URL (postgresql:// followed by "
                "user:password@host:port/db)"
            )
        problem = _postgres_url_problem(url)
        if problem:
            raise ValueError(f"{problem} (value not shown): {_PERCENT_ENCODE}")
        return SecretStr(url)

    @field_validator("phlo_s3_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        # host:port never holds an '@': one is credentials, cut wherever a key holds '/'.
        if value is not None and "@" in value:
            raise ValueError(
                "carries credentials (value not shown): use PHLO_S3_ACCESS_KEY_ID and "
                "PHLO_S3_SECRET_ACCESS_KEY"
            )
        return value or None

    @model_validator(mode="after")
    def _s3_needs_keys(self) -> PhloSettings:
        register_secret(self.datahub_token.get_secret_value() if self.datahub_token else None)
        for secret in (self.phlo_s3_secret_access_key, *self._postgres_urls()):
            register_secret(secret.get_secret_value() if secret else None)
            if secret is not None:
                _register_password(secret.get_secret_value())
        if self.phlo_lake_catalog:
            _register_password(self.phlo_lake_catalog.removeprefix("postgres:"))
        if self.phlo_run_launcher == "docker":
            self._docker_runs_need()
        if self.phlo_celery_broker_url is not None:
            _register_password(self.phlo_celery_broker_url.get_secret_value())
        if self.phlo_executor == "celery":
            self._celery_needs()
        if self.lake_on_s3 and not (self.phlo_s3_access_key_id and self.phlo_s3_secret_access_key):
            raise ValueError(
                f"PHLO_LAKE_DATA_PATH is {self.lake_data_path}: set PHLO_S3_ACCESS_KEY_ID and "
                "PHLO_S3_SECRET_ACCESS_KEY"
            )
        return self

    def _docker_runs_need(self) -> None:
        """A run in a container of its own reaches Dagster's storage only on a server, and
        reads its URL from its environment, where SQLAlchemy must understand its scheme."""
        if self.phlo_run_image is None or not self.phlo_run_image.strip():
            raise ValueError("PHLO_RUN_LAUNCHER is docker: set PHLO_RUN_IMAGE (the image runs use)")
        url = self.phlo_dagster_postgres_url
        if url is None:
            raise ValueError(
                "PHLO_RUN_LAUNCHER is docker: set PHLO_DAGSTER_POSTGRES_URL (a run in its own "
                "container cannot reach Dagster's SQLite files)"
            )
        if not url.get_secret_value().startswith(DOCKER_RUNS_URL_SCHEME):
            raise ValueError(
                f"PHLO_RUN_LAUNCHER is docker: write PHLO_DAGSTER_POSTGRES_URL as "
                f"{DOCKER_RUNS_URL_SCHEME}... (a run in a container hands it to SQLAlchemy as "
                "it is, which reads postgresql:// as psycopg 3, not installed)"
            )

    def _celery_needs(self) -> None:
        """Steps on workers (maybe other machines) share the broker and Dagster's storage."""
        if self.phlo_celery_broker_url is None:
            raise ValueError(
                "PHLO_EXECUTOR is celery: set PHLO_CELERY_BROKER_URL (`phlo services up --with "
                "workers` starts a broker and sets it)"
            )
        if self.phlo_dagster_postgres_url is None:
            raise ValueError(
                "PHLO_EXECUTOR is celery: set PHLO_DAGSTER_POSTGRES_URL (workers record their "
                "steps in Dagster's storage, which SQLite files under one home cannot share)"
            )

    @field_validator("phlo_celery_broker_url")
    @classmethod
    def _broker_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value().strip()
        if not url.startswith(("redis://", "rediss://", "filesystem://", "amqp://", "pyamqp://")):
            scheme = _scheme_of(url)
            shown = f"a {scheme!r} URL" if scheme else "the value"
            raise ValueError(
                f"{shown} is not a Celery broker URL (redis:// with password, host, port and "
                "database)"
            )
        return SecretStr(url)

    @field_validator("phlo_run_tag_limits")
    @classmethod
    def _tag_limits_parse(cls, value: str) -> str:
        _tag_limits(value)  # a wrong value is a settings error now, not when the queue is written
        return value

    @property
    def run_tag_limits(self) -> list[dict[str, Any]]:
        """PHLO_RUN_TAG_LIMITS as Dagster's tag_concurrency_limits."""
        return _tag_limits(self.phlo_run_tag_limits)

    def _postgres_urls(self) -> list[SecretStr]:
        urls = [self.phlo_dagster_postgres_url, self.phlo_publish_postgres_url]
        return [url for url in urls if url is not None]

    @property
    def on_servers(self) -> bool:
        """Anything on a server (catalog, files or Dagster's storage) rather than local files."""
        return (
            self.lake_on_s3
            or self.lake_catalog.startswith("postgres:")
            or self.phlo_dagster_postgres_url is not None
        )

    @property
    def lake_on_s3(self) -> bool:
        return self.lake_data_path.startswith("s3://")

    @property
    def duckdb_threads(self) -> int | None:
        """DuckDB's threads per process (phlo's connections and dbt's): PHLO_DUCKDB_THREADS, else
        one for a lake on local files, else (None) DuckDB's own default, a thread per core.

        Phlo's work is many small queries against the catalog (a day is ~300 rows, each test
        a query): on local files DuckDB's threads spent more time coordinating than querying
        (on two cores a day's dbt builds took 1.6x and the report's reads 3x as long as on
        one). Parallel work runs in processes (backfill and Celery workers). In an object
        store, threads also read files side by side, hiding each request's latency."""
        if self.phlo_duckdb_threads is not None:
            return self.phlo_duckdb_threads
        return None if self.lake_on_s3 else 1

    @property
    def s3_endpoint(self) -> tuple[str | None, bool]:
        """(host:port or None for AWS, whether to use TLS): a scheme on the endpoint decides."""
        endpoint = self.phlo_s3_endpoint
        if endpoint is None:
            return None, self.phlo_s3_use_ssl
        if "://" in endpoint:
            scheme, _, rest = endpoint.partition("://")
            return rest.rstrip("/"), scheme == "https"
        return endpoint.rstrip("/"), self.phlo_s3_use_ssl

    @property
    def dagster_postgres_url(self) -> str | None:
        """Dagster's storage URL with the psycopg2 driver (SQLAlchemy 2 would pick psycopg 3)."""
        if self.phlo_dagster_postgres_url is None:
            return None
        url = self.phlo_dagster_postgres_url.get_secret_value()
        return "postgresql+psycopg2://" + url.split("://", 1)[1]

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


def _tag_limits(text: str) -> list[dict[str, Any]]:
    """'KEY:N, KEY=VALUE:N, KEY=*:N' as Dagster's tag_concurrency_limits; ValueError when an
    item is none of these."""
    limits: list[dict[str, Any]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        tag, colon, count = item.rpartition(":")
        key, equals, value = tag.partition("=")
        if not colon or not key.strip() or not count.strip().isdigit():
            raise ValueError(f"{item!r} is not KEY:N, KEY=VALUE:N or KEY=*:N")
        limit: dict[str, Any] = {"key": key.strip(), "limit": int(count)}
        if equals:
            value = value.strip()
            limit["value"] = {"applyLimitPerUniqueValue": True} if value == "*" else value
        limits.append(limit)
    return limits


def check_home(settings: PhloSettings, *, writes: bool = True) -> Path:
    """PHLO_HOME as a writable folder (created if missing), or a SettingsError saying why not.
    A command that only reads (`writes=False`) needs no more than a folder or nothing there:
    a read-only home (a mounted backup, another user's lakehouse) can be queried."""
    home = settings.home
    if home.exists() and not home.is_dir():
        raise SettingsError(f"PHLO_HOME={home} is a file: point PHLO_HOME at a folder")
    if not writes:
        return home
    try:
        # The owner's alone (health data, logs, settings with secrets); a home that exists
        # keeps the mode its owner gave it.
        home.parent.mkdir(parents=True, exist_ok=True)
        home.mkdir(mode=0o700, exist_ok=True)
        probe = home / f".phlo-write-check-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise SettingsError(
            f"PHLO_HOME={home} is not usable as Phlo's home folder: {exc.strerror or exc}"
        ) from None
    return home


def _credential_fragments(value: object) -> list[str]:
    """Pieces of a refused value that may be a credential, longest first: a URL's user
    information up to its last '@', its password, and the password's parts between '@', '/',
    '?' and '#' (where a parser that splits elsewhere would cut it)."""
    if not isinstance(value, str) or "://" not in value or "@" not in value:
        return []
    rest = value.partition("://")[2]
    userinfo = rest[: rest.rfind("@")]
    password = userinfo.partition(":")[2]
    pieces = {userinfo, password, *re.split(r"[@/?#]", password)}
    return sorted((piece for piece in pieces if len(piece) >= 3), key=len, reverse=True)


def _scrubbed(message: str, value: object) -> str:
    """`message` with anything of `value` that may be a credential masked: the second line
    behind validators that never quote one (a location's own model may)."""
    for piece in _credential_fragments(value):
        message = message.replace(piece, "***")
    return redact(message)


def _one_line(exc: ValidationError) -> SettingsError:
    """pydantic's multi-line report as one line naming each variable."""
    problems = []
    for error in exc.errors():
        message = _scrubbed(str(error["msg"]).removeprefix("Value error, "), error.get("input"))
        if error["loc"]:
            message = f"{str(error['loc'][0]).upper()}: {message}"
        problems.append(message)
    return SettingsError("invalid configuration: " + "; ".join(problems))


def load_settings(**overrides: object) -> PhloSettings:
    """Build settings, turning pydantic's multi-line report into one line naming the variable.

    Beneath the environment and `.env` lies PHLO_HOME/services.env, written by `phlo services
    up`: with local services running, every command uses them unless told otherwise."""
    core, for_locations = _split(overrides)
    try:
        given = {k: v for k, v in core.items() if k == "phlo_home"}
        home = _Home(**given).phlo_home  # pyright: ignore[reportArgumentType]
        settings = PhloSettings(_env_file=env_files(home), **core)  # pyright: ignore
    except ValidationError as exc:
        raise _one_line(exc) from None
    return _with_location_values(settings, for_locations)


def _split(values: dict[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """Values for phlo's own settings, and those given for the locations' models."""
    fields = PhloSettings.model_fields
    return (
        {k: v for k, v in values.items() if k in fields},
        {k: v for k, v in values.items() if k not in fields},
    )


def _with_location_values(settings: PhloSettings, values: dict[str, object]) -> PhloSettings:
    """`settings` holding `values` for the locations' models; SettingsError naming any that no
    location of the workspace declares (without its value)."""
    if values:
        known = {name for model in location_models(settings) for name in model.model_fields}
        unknown = sorted(name.upper() for name in values if name not in known)
        if unknown:
            raise SettingsError(
                f"invalid configuration: {', '.join(unknown)}: not a setting of phlo nor of any "
                "code location in the workspace"
            )
        settings._location_values = {**settings._location_values, **values}
    return settings


def location_models(settings: PhloSettings) -> list[type[LocationSettings]]:
    """Every location's settings model: the `LocationSettings` classes of the `settings` module
    of each location in the workspace (a location without one has no settings of its own)."""
    import importlib
    import importlib.util

    from phlo_core.workspace import location_refs

    models: list[type[LocationSettings]] = []
    for ref in location_refs(settings):
        name = f"{ref.package}.settings"
        try:
            found = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            found = None
        if found is None:
            continue
        module = importlib.import_module(name)
        models += [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, LocationSettings)
            and value is not LocationSettings
            and value.__module__ == name
        ]
    return models


class _Home(BaseSettings):
    """PHLO_HOME alone, read as PhloSettings reads it: where to look for services.env."""

    model_config = SettingsConfigDict(
        env_file=DOTENV, env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )
    phlo_home: Path = DEFAULT_HOME


def services_profile(home: Path) -> dict[str, str]:
    """The settings `phlo services up` wrote for the home `home` (empty when there are none)."""
    from dotenv import dotenv_values

    path = services_env(home)
    if not path.is_file():
        return {}
    return {key.lower(): value for key, value in dotenv_values(path).items() if value is not None}


LocationModel = TypeVar("LocationModel", bound=LocationSettings)


def load_location_settings(model: type[LocationModel], settings: PhloSettings) -> LocationModel:
    """A location's own settings model, read from the environment and `.env` like the core's,
    with the values `settings` was given for its fields by name; SettingsError on one line.
    Read once for each settings object (a command's, a run's): later calls get the same."""
    kept = settings.__pydantic_private__
    if kept is None:  # a model built without its private state (model_construct)
        kept = settings.__pydantic_private__ = {}
    given = {
        name: value
        for name, value in settings.location_values.items()
        if name in model.model_fields
    }
    read: dict[tuple[type[BaseSettings], str], BaseSettings] = kept.setdefault("_locations", {})
    key = (model, repr(sorted(given.items())))
    found = read.get(key)
    if isinstance(found, model):
        return found
    try:
        read[key] = loaded = model(**given)
    except ValidationError as exc:
        raise _one_line(exc) from None
    return loaded


def with_overrides(settings: PhloSettings, **updates: object) -> PhloSettings:
    """A validated copy of `settings` with some values replaced (the environment is not read)."""
    core, for_locations = _split(updates)
    try:
        updated = PhloSettings.model_validate({**settings.model_dump(), **core})
    except ValidationError as exc:
        error = exc.errors()[0]
        raise SettingsError(
            f"invalid configuration: {_scrubbed(str(error['msg']), error.get('input'))}"
        ) from None
    updated._location_values = settings.location_values
    return _with_location_values(updated, for_locations)


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
