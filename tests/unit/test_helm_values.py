"""infra/helm/values.yaml, for Dagster's official chart (not runnable here: no cluster). The parts
the chart turns into the instance's dagster.yaml (its configmap-instance template: the queued
run coordinator's config passed through, the K8s run launcher's written with the pods' env
references) are checked against Dagster's own config schema, and the rest against phlo: a code
server for every location of the workspace, phlo's queue limits, the settings' Secret everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from phlo_core.runs.instance import run_limits
from phlo_core.settings import load_settings
from phlo_core.workspace import DEFAULT_WORKSPACE, REPO_ROOT

VALUES = REPO_ROOT / "infra" / "helm" / "values.yaml"
SECRET = {"name": "phlo-settings"}


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def errors_of(config_type: Any, config: dict[str, Any]) -> list[str]:
    from dagster._config import validate_config

    result = validate_config(config_type, config)
    return [error.message for error in result.errors or []]


def test_the_queue_is_dagsters_queued_coordinator_with_phlos_limits(
    values: dict[str, Any],
) -> None:
    from dagster._core.run_coordinator import QueuedRunCoordinator

    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    given = coordinator["config"]["queuedRunCoordinator"]
    # The chart writes maxConcurrentRuns and tagConcurrencyLimits as these keys, as they are.
    config = {
        "max_concurrent_runs": given["maxConcurrentRuns"],
        "tag_concurrency_limits": given["tagConcurrencyLimits"],
    }
    assert errors_of(QueuedRunCoordinator.config_type(), config) == []
    assert config == run_limits(load_settings())  # the defaults of phlo's own instance
    broken = {**config, "max_concurrent_runs": "four"}
    assert errors_of(QueuedRunCoordinator.config_type(), broken)  # the check can fail


def test_runs_launch_as_kubernetes_jobs_with_the_settings_secret(values: dict[str, Any]) -> None:
    from dagster_k8s import K8sRunLauncher

    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    given = launcher["config"]["k8sRunLauncher"]
    # As the chart's template writes it (the env references are set in its pods).
    config = {
        "load_incluster_config": given["loadInclusterConfig"],
        "job_namespace": "phlo",
        "image_pull_policy": given["imagePullPolicy"],
        "service_account_name": "phlo-dagster",
        "dagster_home": {"env": "DAGSTER_HOME"},
        "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
        "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
        "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}],
        "env_secrets": [secret["name"] for secret in given["envSecrets"]],
    }
    assert errors_of(K8sRunLauncher.config_type(), config) == []
    assert config["env_secrets"] == [SECRET["name"]]


def test_a_code_server_for_every_location_and_workers_all_with_the_settings(
    values: dict[str, Any],
) -> None:
    workspace = yaml.safe_load(DEFAULT_WORKSPACE.read_text())["load_from"]
    locations = {
        entry["python_module"]["location_name"]: entry["python_module"]["module_name"]
        for entry in workspace
    }
    deployments = values["dagster-user-deployments"]["deployments"]
    assert {d["name"]: d["dagsterApiGrpcArgs"] for d in deployments} == {
        name: ["-m", module] for name, module in locations.items()
    }
    images = {f"{d['image']['repository']}:{d['image']['tag']}" for d in deployments}
    assert all(d["envSecrets"] == [SECRET] for d in deployments)
    [worker] = values["dagster-user-deployments"]["extraManifests"]
    [container] = worker["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["phlo", "worker", "start"]
    assert {container["image"]} == images
    assert container["envFrom"] == [{"secretRef": SECRET}]
    assert values["pythonLogs"]["managedPythonLoggers"] == ["phlo"]
    # The chart runs `dagster api grpc`; the workers run `phlo`: both on the image's PATH.
    dockerfile = (REPO_ROOT / "infra" / "docker" / "phlo" / "Dockerfile").read_text()
    assert "/opt/phlo/bin/dagster" in dockerfile and "/opt/phlo/bin/phlo" in dockerfile


def test_the_settings_secret_holds_what_is_set_here_and_prints_only_names(tmp_path: Path) -> None:
    import json
    import os
    import stat
    import subprocess
    import sys

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PHLO_", "NIGHTSCOUT_"))},
        "PHLO_HOME": str(tmp_path / "home"),
        "PHLO_TIMEZONE": "Europe/Oslo",
        "PHLO_EXECUTOR": "celery",
        "PHLO_CELERY_BROKER_URL": "redis://:broker-pw-77@redis.phlo.svc:6379/0",
        "PHLO_DAGSTER_POSTGRES_URL": "postgresql://phlo:pg-pw-77@postgres.phlo.svc/phlo_dagster",
        "NIGHTSCOUT_URL": "https://ns.example",
        "NIGHTSCOUT_API_SECRET": "ns-secret-77",
    }
    out = tmp_path / "secret.json"
    phlo = str(Path(sys.executable).with_name("phlo"))
    done = subprocess.run(
        [phlo, "deploy", "k8s-secret", "--out", str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads(out.read_text())
    assert (manifest["kind"], manifest["metadata"]["name"]) == ("Secret", "phlo-settings")
    assert manifest["stringData"] == {
        key: value
        for key, value in env.items()
        if key.startswith(("PHLO_", "NIGHTSCOUT_")) and key != "PHLO_HOME"
    }
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    for secret in ("broker-pw-77", "pg-pw-77", "ns-secret-77"):
        assert secret not in done.stdout + done.stderr
    assert "NIGHTSCOUT_API_SECRET" in done.stderr
