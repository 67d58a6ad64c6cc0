"""The dbt profile reaches the production profile's servers without holding their secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from phlo_core.dbt.profile import CATALOG_ENV, S3_SECRET_ENV, write_profile
from phlo_core.dbt.runner import secrets_for_dbt
from phlo_core.settings import load_settings


def test_secrets_go_through_dbt_secret_variables_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Set here so that the test's end restores them (to unset, usually).
    monkeypatch.setenv(CATALOG_ENV, "")
    monkeypatch.setenv(S3_SECRET_ENV, "")
    catalog = "postgres:dbname=lake host=db user=phlo password=catalog-secret-1"
    settings = load_settings(
        phlo_home=tmp_path,
        phlo_lake_catalog=catalog,
        phlo_lake_data_path="s3://lake/ducklake/",
        phlo_s3_endpoint="127.0.0.1:9000",
        phlo_s3_use_ssl=False,
        phlo_s3_access_key_id="key-id",
        phlo_s3_secret_access_key="s3-secret-2",
    )
    text = (write_profile(settings) / "profiles.yml").read_text()
    assert "catalog-secret-1" not in text and "s3-secret-2" not in text
    output = yaml.safe_load(text)["phlo"]["outputs"]["lake"]
    assert output["attach"][0]["path"] == "ducklake:{{ env_var('" + CATALOG_ENV + "', '') }}"
    assert output["secrets"] == [
        {
            "type": "s3",
            "key_id": "key-id",
            "secret": "{{ env_var('" + S3_SECRET_ENV + "', '') }}",
            "region": "us-east-1",
            "url_style": "path",
            "use_ssl": False,
            "scope": "s3://lake",
            "endpoint": "127.0.0.1:9000",
        }
    ]
    # Writing the profile put nothing in the environment; dbt finds them there while it runs
    # a command (its logs scrub DBT_ENV_SECRET_ values), and only then.
    assert os.environ[CATALOG_ENV] == "" and os.environ[S3_SECRET_ENV] == ""
    with secrets_for_dbt(settings):
        assert os.environ[CATALOG_ENV] == catalog
        assert os.environ[S3_SECRET_ENV] == "s3-secret-2"
    assert os.environ[CATALOG_ENV] == "" and os.environ[S3_SECRET_ENV] == ""
    monkeypatch.delenv(CATALOG_ENV)
    with secrets_for_dbt(settings):
        assert os.environ[CATALOG_ENV] == catalog
    assert CATALOG_ENV not in os.environ


def test_the_embedded_default_profile_names_its_catalog_file(tmp_path: Path) -> None:
    settings = load_settings(phlo_home=tmp_path)
    output = yaml.safe_load((write_profile(settings) / "profiles.yml").read_text())
    lake = output["phlo"]["outputs"]["lake"]
    assert lake["attach"][0]["path"] == f"ducklake:{settings.lake_catalog}"
    assert "secrets" not in lake
