"""The production settings as a Kubernetes Secret (`phlo deploy k8s-secret`), which every pod of
infra/helm/values.yaml reads (code servers, run jobs, Celery workers): phlo's and every location's
settings as this command sees them (the environment, `.env`, PHLO_HOME/services.env), those set
explicitly, without the paths of this machine (PHLO_HOME, DAGSTER_HOME, PHLO_WORKSPACE: the
image has its own)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from phlo_core.lakehouse.locks import write_atomically
from phlo_core.settings import PhloSettings, load_location_settings, location_models

SECRET_NAME = "phlo-settings"
_LOCAL_ONLY = {"phlo_home", "dagster_home", "phlo_workspace"}


def _text(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _set_values(model: BaseSettings) -> dict[str, str]:
    return {
        name.upper(): _text(getattr(model, name))
        for name in sorted(model.model_fields_set)
        if name not in _LOCAL_ONLY and getattr(model, name) is not None
    }


def _manifest(name: str, data: dict[str, str]) -> dict[str, object]:
    """A Secret manifest (stringData: Kubernetes encodes it)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "phlo"}},
        "type": "Opaque",
        "stringData": data,
    }


def _secret_data(settings: PhloSettings) -> dict[str, str]:
    data = _set_values(settings)
    for model in location_models(settings):
        data |= _set_values(load_location_settings(model, settings))
    return data


def write_settings_secret(settings: PhloSettings, out: Path, name: str = SECRET_NAME) -> list[str]:
    """Write the manifest to `out` (owner only: it holds the secrets); the settings' names."""
    data = _secret_data(settings)
    # JSON is YAML: `kubectl apply -f` reads it; no value is ever quoted wrongly.
    write_atomically(out, json.dumps(_manifest(name, data), indent=2) + "\n", mode=0o600)
    return sorted(data)
