from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path
from urllib.parse import quote

import pytest

from locations.nightscout.settings import nightscout_settings
from phlo_core.settings import SettingsError, check_home, load_settings, with_overrides


def test_defaults_put_everything_under_phlo_home(tmp_path: Path) -> None:
    settings = load_settings(phlo_home=tmp_path / "home")
    home = (tmp_path / "home").resolve()
    assert settings.phlo_timezone == "UTC"
    assert settings.phlo_partition_start == dt.date(2024, 1, 1)
    assert settings.resolved_dagster_home == home / "dagster"
    assert settings.lake_catalog == f"sqlite:{home / 'lake' / 'catalog.sqlite'}"
    assert settings.lake_data_path.startswith(str(home))
    assert settings.extension_directory.is_relative_to(home)


def test_environment_and_dotenv_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(
        "PHLO_TIMEZONE=Europe/Oslo\nNIGHTSCOUT_URL=https://ns.example/\n"
    )
    monkeypatch.setenv("PHLO_PARTITION_START", "2024-03-01")
    settings = load_settings()
    assert settings.phlo_timezone == "Europe/Oslo"
    assert nightscout_settings(settings).nightscout_url == "https://ns.example"
    assert nightscout_settings(settings).nightscout_reading_interval_minutes == 5
    assert settings.phlo_partition_start == dt.date(2024, 3, 1)


def test_the_environment_wins_over_dotenv_for_a_locations_setting_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for phlo's own settings. A location's values of `.env` used to ride in the core's
    settings as extras and were then given to the location's model by name, over the
    environment."""
    (tmp_path / ".env").write_text(
        "PHLO_TIMEZONE=Europe/Oslo\nNIGHTSCOUT_URL=https://from-dotenv.example\nSOMETHING_ELSE=1\n"
    )
    monkeypatch.setenv("PHLO_TIMEZONE", "Asia/Tokyo")
    monkeypatch.setenv("NIGHTSCOUT_URL", "https://from-env.example")
    settings = load_settings()
    assert settings.phlo_timezone == "Asia/Tokyo"
    assert nightscout_settings(settings).nightscout_url == "https://from-env.example"
    # .env's other variables are not phlo's: neither kept nor an error
    assert not settings.model_extra and not settings.location_values


def test_a_name_given_that_no_one_declares_is_an_error_without_its_value() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(nightscout_urll="https://secret-token@ns.example")
    message = str(error.value)
    assert "NIGHTSCOUT_URLL" in message and "not a setting" in message
    assert "secret-token" not in message and "\n" not in message
    with pytest.raises(SettingsError, match="PHLO_TIMEZON"):
        with_overrides(load_settings(), phlo_timezon="UTC")


def test_values_given_for_a_location_go_to_its_model_and_survive_overrides(
    tmp_path: Path,
) -> None:
    settings = load_settings(phlo_home=tmp_path, nightscout_url="https://given.example/")
    assert settings.location_values == {"nightscout_url": "https://given.example/"}
    moved = with_overrides(settings, phlo_home=tmp_path / "other", nightscout_page_size=7)
    site = nightscout_settings(moved)
    assert (site.nightscout_url, site.nightscout_page_size) == ("https://given.example", 7)
    assert moved.home == (tmp_path / "other").resolve()
    assert "nightscout_url" not in settings.model_dump()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PHLO_TIMEZONE", "Mars/Olympus_Mons"),
        ("NIGHTSCOUT_URL", "not a url"),
        ("PHLO_PARTITION_START", "2024-02-30"),
        ("NIGHTSCOUT_READING_INTERVAL_MINUTES", "0"),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_variable(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        nightscout_settings(load_settings())
    message = str(error.value)
    assert variable in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"phlo_run_launcher": "kubernetes"}, "PHLO_RUN_LAUNCHER"),
        ({"phlo_run_launcher": "docker"}, "set PHLO_RUN_IMAGE"),
        ({"phlo_run_launcher": "docker", "phlo_run_image": "phlo-phlo:x"}, "set PHLO_DAGSTER"),
        (
            {
                "phlo_run_launcher": "docker",
                "phlo_run_image": "phlo-phlo:x",
                "phlo_dagster_postgres_url": "postgresql://phlo:pw-9z@127.0.0.1:5432/d",
            },
            "write PHLO_DAGSTER_POSTGRES_URL as postgresql+psycopg2://",
        ),
        ({"phlo_executor": "celery"}, "set PHLO_CELERY_BROKER_URL"),
        (
            {"phlo_executor": "celery", "phlo_celery_broker_url": "redis://:pw-9z@h:6379/0"},
            "set PHLO_DAGSTER_POSTGRES_URL",
        ),
        ({"phlo_celery_broker_url": "http://u:pw-9z@h:1"}, "not a Celery broker URL"),
        ({"phlo_run_tag_limits": "team=*"}, "'team=*' is not KEY:N"),
        ({"phlo_run_tag_limits": "a:1,:2"}, "':2' is not KEY:N"),
        ({"phlo_max_concurrent_runs": "0"}, "PHLO_MAX_CONCURRENT_RUNS"),
        ({"phlo_runs_per_location": "x"}, "PHLO_RUNS_PER_LOCATION"),
    ],
)
def test_launcher_queue_and_worker_settings_are_checked_in_one_line(
    given: dict[str, str], expected: str
) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(**given)
    message = str(error.value)
    assert expected in message and "\n" not in message and "pw-9z" not in message


def test_tag_limits_read_as_dagsters_tag_concurrency_limits() -> None:
    settings = load_settings(phlo_run_tag_limits=" team:3, team=ml:1 ,phlo/backfill=*:2,")
    assert settings.run_tag_limits == [
        {"key": "team", "limit": 3},
        {"key": "team", "limit": 1, "value": "ml"},
        {"key": "phlo/backfill", "limit": 2, "value": {"applyLimitPerUniqueValue": True}},
    ]
    assert load_settings().run_tag_limits == []


def test_a_broker_password_is_masked_wherever_it_shows() -> None:
    from phlo_core.redact import redact

    settings = load_settings(phlo_celery_broker_url="redis://:s3cret-broker@127.0.0.1:6379/0")
    assert "s3cret-broker" not in repr(settings)
    assert redact("Error 111 connecting to s3cret-broker") == "Error 111 connecting to ***"


def test_secrets_do_not_show_in_the_settings_repr() -> None:
    settings = load_settings(nightscout_api_secret="hunter2", nightscout_token="tok-123")
    assert "hunter2" not in repr(settings) and "tok-123" not in str(settings)
    site = nightscout_settings(settings)
    assert "hunter2" not in repr(site)
    assert "tok-123" not in str(site.model_dump())
    assert site.nightscout_api_secret is not None
    assert site.nightscout_api_secret.get_secret_value() == "hunter2"


@pytest.mark.parametrize(
    "url",
    [
        "http://reader:pa55word-xyz@ns.example",
        "https://reader:pa55/word-xyz@ns.example",  # no userinfo for urlsplit: '/' hides it
        "reader:pa55word-xyz@ns.example",  # no scheme: refused as credentials, not echoed
    ],
)
def test_a_url_with_a_password_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("NIGHTSCOUT_URL", url)
    with pytest.raises(SettingsError) as error:
        nightscout_settings(load_settings())
    message = str(error.value)
    assert "NIGHTSCOUT_URL" in message and "NIGHTSCOUT_API_SECRET" in message
    assert "pa55" not in message and "word-xyz" not in message and "reader" not in message


@pytest.mark.parametrize("value", ["20240329", "2024-W13-5", "2024-3-1"])
def test_partition_start_must_be_written_yyyy_mm_dd(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHLO_PARTITION_START", value)
    with pytest.raises(SettingsError, match="PHLO_PARTITION_START.*YYYY-MM-DD"):
        load_settings()


def test_a_home_that_is_a_file_names_its_role(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("not a folder")
    with pytest.raises(SettingsError, match=r"PHLO_HOME=.*home is a file"):
        check_home(load_settings(phlo_home=tmp_path / "home"))


def test_a_home_that_cannot_be_written_names_its_role() -> None:
    # /proc refuses new folders even to root, as a read-only mount would.
    with pytest.raises(SettingsError, match=r"PHLO_HOME=/proc/phlo-home is not usable"):
        check_home(load_settings(phlo_home="/proc/phlo-home"))


def test_a_data_path_with_credentials_is_refused_without_showing_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PHLO_LAKE_DATA_PATH", "s3://AKIDEXAMPLE:wJalrXUtnFEMI@lake/ducklake/")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "PHLO_LAKE_DATA_PATH" in str(error.value)
    assert "wJalrXUtnFEMI" not in str(error.value)


PRODUCTION = {
    "phlo_lake_catalog": "postgres:dbname=lake host=db port=5432 user=phlo password=cat-pass-123",
    "phlo_lake_data_path": "s3://lake/ducklake/",
    "phlo_s3_endpoint": "http://127.0.0.1:9000",
    "phlo_s3_access_key_id": "phlo-key",
    "phlo_s3_secret_access_key": "s3-secret-value-456",
    "phlo_dagster_postgres_url": "postgresql://phlo:dagster-pass-789@db:5432/dagster",
    "phlo_publish_postgres_url": "postgres://phlo:publish-pass-012@db:5432/analytics",
}


def test_the_production_profile_is_read_and_its_secrets_never_shown(tmp_path: Path) -> None:
    from phlo_core.redact import redact

    settings = load_settings(phlo_home=tmp_path, **PRODUCTION)
    assert settings.lake_on_s3 and settings.on_servers
    assert settings.s3_endpoint == ("127.0.0.1:9000", False)
    assert settings.dagster_postgres_url == (
        "postgresql+psycopg2://phlo:dagster-pass-789@db:5432/dagster"
    )
    shown = repr(settings) + str(settings)
    for secret in ("cat-pass-123", "s3-secret-value-456", "dagster-pass-789", "publish-pass-012"):
        assert secret not in shown
        # Registered once the settings are read: masked in any later text, whatever its shape.
        assert redact(f"driver said: {secret}!") == "driver said: ***!"


def test_an_s3_data_path_needs_keys_and_a_catalog_needs_a_known_kind(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(phlo_home=tmp_path, phlo_lake_data_path="s3://lake/ducklake/")
    assert str(error.value) == (
        "invalid configuration: PHLO_LAKE_DATA_PATH is s3://lake/ducklake/: set "
        "PHLO_S3_ACCESS_KEY_ID and PHLO_S3_SECRET_ACCESS_KEY"
    )
    with pytest.raises(SettingsError, match="PHLO_LAKE_CATALOG: 'mysql' is not a DuckLake"):
        load_settings(phlo_home=tmp_path, phlo_lake_catalog="mysql:x")
    with pytest.raises(SettingsError) as error:
        load_settings(phlo_home=tmp_path, phlo_dagster_postgres_url="mysql://u:hidden-pw@h/d")
    assert "PHLO_DAGSTER_POSTGRES_URL" in str(error.value)
    assert "hidden-pw" not in str(error.value)


def test_services_env_lies_beneath_the_environment_and_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "services.env").write_text(
        "PHLO_LAKE_DATA_PATH=/from/services\nPHLO_SNAPSHOT_RETENTION_DAYS=3\n"
        "PHLO_QUERY_TIMEOUT_SECONDS=5\n"
    )
    (tmp_path / ".env").write_text(f"PHLO_HOME={home}\nPHLO_SNAPSHOT_RETENTION_DAYS=4\n")
    monkeypatch.setenv("PHLO_QUERY_TIMEOUT_SECONDS", "6")
    settings = load_settings()
    assert settings.home == home.resolve()  # PHLO_HOME from .env finds the services file
    assert settings.lake_data_path == "/from/services/"
    assert settings.phlo_snapshot_retention_days == 4  # .env wins over services.env
    assert settings.phlo_query_timeout_seconds == 6  # the environment wins over both


# Passwords a user pastes as they are: each holds a character that ends a URL's user
# information for some parser (libpq, SQLAlchemy or urlsplit), which then quotes the rest.
RAW_PASSWORDS = ["s3cr@t-tail9", "s3cr/t@tail9", "s3cr?t@tail9", "s3cr#t@tail9", "s3cr[t]tail9"]
URL_SETTINGS = {
    "PHLO_LAKE_CATALOG": "postgres:postgresql://phlo:{}@127.0.0.1:5432/phlo_lake",
    "PHLO_DAGSTER_POSTGRES_URL": "postgresql://phlo:{}@127.0.0.1:5432/phlo_dagster",
    "PHLO_PUBLISH_POSTGRES_URL": "postgresql://phlo:{}@127.0.0.1:5432/phlo_marts",
}


def assert_no_part_of(password: str, message: str) -> None:
    """Neither the password nor any run of 4 of its characters is in `message`."""
    assert password not in message
    for i in range(len(password) - 3):
        assert password[i : i + 4] not in message, password[i : i + 4]


@pytest.mark.parametrize("password", RAW_PASSWORDS)
@pytest.mark.parametrize("variable", sorted(URL_SETTINGS))
def test_a_postgres_url_with_an_unencoded_password_is_refused_without_showing_it(
    variable: str, password: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq reads `postgresql://phlo:s3cr@t-tail9@127.0.0.1/db` as host `t-tail9@127.0.0.1`
    and says so in its error; such a URL is refused when the settings are read."""
    url = URL_SETTINGS[variable].format(password)
    monkeypatch.setenv(variable, url)
    with pytest.raises(SettingsError) as error:
        load_settings(phlo_home=tmp_path)
    message = str(error.value)
    assert variable in message and "percent-encode" in message
    assert "\n" not in message
    assert url not in message
    assert_no_part_of(password, message)


@pytest.mark.parametrize("password", RAW_PASSWORDS)
@pytest.mark.parametrize("variable", sorted(URL_SETTINGS))
def test_the_same_password_percent_encoded_is_read_as_it_is(
    variable: str, password: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg2.extensions
    from sqlalchemy.engine import make_url

    from phlo_core.redact import redact

    url = URL_SETTINGS[variable].format(quote(password, safe=""))
    monkeypatch.setenv(variable, url)
    settings = load_settings(phlo_home=tmp_path)
    dsn = url.removeprefix("postgres:")
    # What the drivers read: libpq (DuckLake's catalog, publishing) and SQLAlchemy (Dagster).
    assert psycopg2.extensions.parse_dsn(dsn)["password"] == password
    assert psycopg2.extensions.parse_dsn(dsn)["host"] == "127.0.0.1"
    assert make_url(dsn).password == password
    assert settings.on_servers or variable == "PHLO_PUBLISH_POSTGRES_URL"
    assert redact(f"driver said: {password}") == "driver said: ***"


@pytest.mark.parametrize(
    ("variable", "value", "secret"),
    [
        # An unquoted password with a space: libpq says `missing "=" after "tail-9"`.
        (
            "PHLO_LAKE_CATALOG",
            "postgres:dbname=lake host=db user=phlo password=s3cr tail-9",
            "tail-9",
        ),
        # ... or `invalid connection option "tail"`.
        ("PHLO_LAKE_CATALOG", "postgres:dbname=lake password=s3cr tail=9x host=db", "s3cr"),
        ("PHLO_LAKE_CATALOG", "postgres:dbname=lake password='s3cr-unclosed host=db", "s3cr"),
        # No host: libpq takes `phlo` for the host and the password for the port.
        ("PHLO_DAGSTER_POSTGRES_URL", "postgresql://phlo:s3cr3t-pw/phlo_dagster", "s3cr3t-pw"),
        ("PHLO_PUBLISH_POSTGRES_URL", "postgresql://phlo:s3cr%zz-pw@db/marts", "s3cr%zz-pw"),
        ("PHLO_PUBLISH_POSTGRES_URL", "postgresql://phlo@db/marts?password=s3cr&tail-9", "tail-9"),
        # Not a PostgreSQL URL at all: only its scheme is named.
        ("PHLO_DAGSTER_POSTGRES_URL", "mysql://phlo:s3cr/t-tail9@db/d", "t-tail9"),
        ("PHLO_LAKE_CATALOG", "postgresql://phlo:s3cr/t-tail9@db/d", "t-tail9"),
        # An S3 secret key holds '/': urlsplit no longer sees user information, so the whole
        # value passed as a path (and showed in the next message).
        ("PHLO_LAKE_DATA_PATH", "s3://AKIDEXAMPLE:wJalrX/tnFEMI@lake/ducklake/", "tnFEMI"),
        ("PHLO_S3_ENDPOINT", "AKIDEXAMPLE:wJalrX/tnFEMI@127.0.0.1:9000", "tnFEMI"),
        ("PHLO_S3_ENDPOINT", "http://AKIDEXAMPLE:wJalrX/tnFEMI@127.0.0.1:9000", "tnFEMI"),
    ],
)
def test_other_malformed_urls_are_refused_without_showing_credentials(
    variable: str, value: str, secret: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings(phlo_home=tmp_path)
    message = str(error.value)
    assert variable in message and "\n" not in message
    assert secret not in message and value not in message


def test_source_requests_have_a_deadline_and_a_size_cap_documented_with_their_defaults(
    tmp_path: Path,
) -> None:
    settings = load_settings(phlo_home=tmp_path)
    assert settings.http_deadline_seconds == 120
    assert settings.http_max_response_mb == 100
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text().splitlines()
    assert "HTTP_DEADLINE_SECONDS=120" in example
    assert "HTTP_MAX_RESPONSE_MB=100" in example


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HTTP_DEADLINE_SECONDS", "0"),
        ("HTTP_DEADLINE_SECONDS", "soon"),
        ("HTTP_MAX_RESPONSE_MB", "-1"),
        ("HTTP_MAX_RESPONSE_MB", "1e9"),
    ],
)
def test_a_wrong_http_limit_is_one_line_naming_the_variable(
    variable: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings(phlo_home=tmp_path)
    message = str(error.value)
    assert message.startswith(f"invalid configuration: {variable}: ")
    assert "\n" not in message


def test_a_home_phlo_creates_is_its_owners_alone_and_an_existing_one_is_left_as_it_is(
    tmp_path: Path,
) -> None:
    created = check_home(load_settings(phlo_home=tmp_path / "new" / "home"))
    assert stat.S_IMODE(created.stat().st_mode) == 0o700
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    check_home(load_settings(phlo_home=existing))
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755


def test_a_locations_settings_are_read_once_per_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A run reads its location's settings once (the source client, the asset and the dbt vars
    all ask): the environment changing meanwhile changes nothing for that run's settings."""
    monkeypatch.chdir(tmp_path)  # no .env of the checkout's
    monkeypatch.setenv("NIGHTSCOUT_READING_INTERVAL_MINUTES", "5")
    settings = load_settings()
    first = nightscout_settings(settings)
    monkeypatch.setenv("NIGHTSCOUT_READING_INTERVAL_MINUTES", "15")
    assert nightscout_settings(settings) is first
    assert first.nightscout_reading_interval_minutes == 5
    assert nightscout_settings(load_settings()).nightscout_reading_interval_minutes == 15
    given = load_settings(nightscout_reading_interval_minutes=10)
    assert nightscout_settings(given).nightscout_reading_interval_minutes == 10
