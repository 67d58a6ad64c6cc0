from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from locations.nightscout.settings import nightscout_settings
from phlo_core.settings import SettingsError, check_home, load_settings


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


def test_secrets_do_not_show_in_the_settings_repr() -> None:
    settings = load_settings(nightscout_api_secret="hunter2", nightscout_token="tok-123")
    assert "hunter2" not in repr(settings) and "tok-123" not in str(settings)
    site = nightscout_settings(settings)
    assert "hunter2" not in repr(site)
    assert "tok-123" not in str(site.model_dump())
    assert site.nightscout_api_secret is not None
    assert site.nightscout_api_secret.get_secret_value() == "hunter2"


def test_a_url_with_a_password_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NIGHTSCOUT_URL", "http://reader:pa55word-xyz@ns.example")
    with pytest.raises(SettingsError) as error:
        nightscout_settings(load_settings())
    message = str(error.value)
    assert "NIGHTSCOUT_URL" in message and "NIGHTSCOUT_API_SECRET" in message
    assert "pa55word-xyz" not in message and "reader" not in message


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
