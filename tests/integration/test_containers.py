"""The session's servers are what was asked for (PHLO_TEST_SERVERS, or containers when a Docker
engine answers), and on the container path they are phlo's own images, built here, carrying no
secret, cleaned up by the fixture (and, for a killed session, by the next one)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from phlo_core.services.images import (
    base_tag,
    docker,
    docker_cli,
    engine_answers,
    exists,
    server_images,
)
from tests.containers import LABEL, Servers, remove_stale_containers, wanted


def test_the_servers_are_the_ones_asked_for(services: Servers) -> None:
    assert services.kind == wanted()
    if os.environ.get("PHLO_TEST_SERVERS") == "containers":  # CI asks: no silent fallback
        assert services.kind == "containers"


needs_engine = pytest.mark.skipif(
    wanted() != "containers",
    reason="servers are local (PHLO_TEST_SERVERS=local, or no Docker engine: make docker-up)",
)


@needs_engine
def test_the_servers_run_from_phlos_images_on_the_host_network(services: Servers) -> None:
    listed = docker(
        "ps", "--filter", f"label={LABEL}={os.getpid()}", "--format", "{{.ID}} {{.Image}}"
    )
    ours = dict(line.split() for line in listed.strip().splitlines())
    images = server_images()  # the broker's image is compose's (--workers), not the session's
    assert sorted(ours.values()) == sorted([images["postgres"], images["seaweedfs"]])
    for container in ours:
        mode = docker("inspect", "--format", "{{.HostConfig.NetworkMode}}", container)
        assert mode.strip() == "host"
    profile = services.provision(f"images{os.getpid()}")
    assert profile["PHLO_S3_ENDPOINT"].startswith("http://127.0.0.1:")


@needs_engine
def test_images_are_cached_by_content_and_carry_their_version_and_no_secret() -> None:
    tags = server_images()
    assert server_images() == tags  # nothing rebuilt: same tags
    for tag in [base_tag(), *tags.values()]:
        assert exists(tag)
        config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", tag))
        assert config["Labels"]["org.opencontainers.image.version"] == tag.split(":", 1)[1]
        env = " ".join(config.get("Env") or [])
        for word in ("PASSWORD", "SECRET", "TOKEN", "KEY="):
            assert word not in env.upper(), (tag, env)


@needs_engine
def test_containers_of_a_killed_session_are_removed_by_the_next() -> None:
    gone_pid = 2**22 + 12345  # above pid_max's default: no such process
    name = f"phlo-test-stale-{os.getpid()}"
    subprocess.run(
        [docker_cli(), "create", "--name", name, "--label", f"{LABEL}={gone_pid}"]
        + ["--network", "host", base_tag(), "sleep", "60"],
        check=True,
        capture_output=True,
    )
    assert name in remove_stale_containers()
    listed = docker("ps", "-a", "--filter", f"name={name}", "--format", "{{.Names}}")
    assert listed.strip() == ""
    assert engine_answers()
