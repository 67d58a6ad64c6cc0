"""The integration tests' servers in containers against the same servers as `phlo services` runs
them, measured in the same run: the servers' start to healthy (PostgreSQL and S3, provisioned),
and the production-profile integration tests end to end on each; the images' warm check (all
cached: nothing built) against `docker version` (one round trip to the engine).

Needs a Docker engine (`make docker-up`) and the images (`make images`; a cold build is timed
by `make images` itself and recorded in the issue's note).

    .venv/bin/python bench/bench_containers.py [--repeat 3]

Results go to bench/results/<date>-containers.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from ratios import ROOT, Ratios, command, timed

sys.path.insert(0, str(ROOT))

from tests.containers import Servers, container_servers, local_servers  # noqa: E402

from phlo_core.services.images import docker_cli, engine_answers, server_images  # noqa: E402

TESTS = ["tests/integration/test_publish.py", "tests/integration/test_status_reader.py"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not engine_answers():
        print("bench_containers: skipped, no Docker engine answers (make docker-up)")
        return
    ratios = Ratios()
    server_images()  # built once, if missing: not what is measured

    def start(servers: Callable[[Path], AbstractContextManager[Servers]]) -> Callable[[], None]:
        def run() -> None:
            with tempfile.TemporaryDirectory() as tmp, servers(Path(tmp)) as running:
                running.provision("bench")

        return run

    containers = timed(start(container_servers), args.repeat)
    local = timed(start(local_servers), args.repeat)
    ratios.record("servers up and removed (containers)", containers, "phlo services", local)
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS]
    on_containers = timed(command(*pytest, env={"PHLO_TEST_SERVERS": "containers"}), 1)
    on_local = timed(command(*pytest, env={"PHLO_TEST_SERVERS": "local"}), 1)
    ratios.record("integration tests on containers", on_containers, "on phlo services", on_local)
    warm = timed(server_images, args.repeat)
    engine = timed(command(docker_cli(), "version"), args.repeat)
    ratios.record("images, all cached (make images)", warm, "docker version", engine)
    ratios.note("DOCKER_HOST", os.environ.get("DOCKER_HOST", "default"))
    ratios.write("containers")


if __name__ == "__main__":
    main()
