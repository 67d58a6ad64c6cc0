"""The integration tests' servers in containers against the same servers as `phlo services` runs
them, measured in the same run: the servers' start to healthy (PostgreSQL and S3, provisioned),
and the production-profile integration tests end to end on each; the images' warm check (all
cached: nothing built) against `docker version` (one round trip to the engine); with the PEXes
of `make pex` (`--no-compose` leaves it out), the compose deployment: a day of glucose_pipeline
launched over GraphQL in a container of its own (Dagster's DockerRunLauncher) against the same
run in the code server's process, and `up` from nothing against `up` again (nothing changed).

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
    parser.add_argument("--no-compose", action="store_true")
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
    if not args.no_compose and (ROOT / "dist" / "phlo.pex").exists():
        compose(ratios, args.repeat)
    ratios.note("DOCKER_HOST", os.environ.get("DOCKER_HOST", "default"))
    ratios.write("containers")


def compose(ratios: Ratios, repeat: int) -> None:
    """The compose deployment with each run launcher, on one sample server and one home."""
    import datetime as dt
    import subprocess

    from tests.e2e.helpers import launch_glucose_day

    from locations.nightscout.sample_server import SampleNightscoutServer

    day = dt.date(2024, 3, 10)
    phlo = str(Path(sys.executable).with_name("phlo"))
    with tempfile.TemporaryDirectory() as tmp, SampleNightscoutServer(api_secret="b" * 12) as ns:
        env = {**os.environ, "PHLO_HOME": str(Path(tmp) / "home")}
        extra = Path(tmp) / "locations.env"
        extra.write_text(f"NIGHTSCOUT_URL={ns.url}\nNIGHTSCOUT_API_SECRET={'b' * 12}\n")

        def up(launcher: str) -> str:
            done = subprocess.run(
                [phlo, "deploy", "compose", "up", "--env-file", str(extra)]
                + ["--run-launcher", launcher],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            return done.stdout.split("Dagster's UI: ")[1].split()[0] + "/graphql"

        def run_day(url: str) -> Callable[[], None]:
            def run() -> None:
                _, status = launch_glucose_day(url, day)
                assert status == "SUCCESS", status

            return run

        try:
            cold = timed(lambda: up("docker"), 1)
            again = timed(lambda: up("docker"), 1)
            ratios.record("compose up, again (nothing changed)", again, "compose up, cold", cold)
            in_container = timed(run_day(up("docker")), repeat)
            in_process = timed(run_day(up("process")), repeat)
            ratios.record(
                "a day over GraphQL, run in its own container", in_container,
                "in the code server's process", in_process,
            )  # fmt: skip
        finally:
            subprocess.run([phlo, "deploy", "compose", "down", "--purge"], env=env, check=False)


if __name__ == "__main__":
    main()
