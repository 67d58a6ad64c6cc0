"""What another user of the machine can reach of `phlo services`: nothing. PostgreSQL wants
the generated password on every connection (socket and TCP), SeaweedFS's internal ports
(master, volume, filer, admin and their gRPC ports) refuse clients without the install's
keys, only the S3 API with its keys reaches the lake, and `up` leaves the folders above
PHLO_HOME as it found them.

The servers are this module's own (started as a user runs `phlo services up`), not the
session's: the probes try to delete the lake.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from phlo_core.services import control as local_services
from phlo_core.services import postgres, s3
from phlo_core.settings import load_settings
from tests.integration.test_services import phlo
from tests.other_user import OtherUser

OBJECTS = {
    "ducklake/main/day=2024-03-09/a.parquet": b"PAR1" + os.urandom(2000),
    "ducklake/main/day=2024-03-10/b.parquet": b"PAR1" + os.urandom(300_000),
}


@dataclass
class Running:
    home: Path
    modes_before: dict[Path, int]
    state: dict[str, Any]
    profile: dict[str, str]
    output: str

    @property
    def pg_root(self) -> Path:
        """PostgreSQL's folder, wherever `up` chose to keep it."""
        return Path(self.state.get("pg_root") or self.home / "services" / "postgres")


def ancestor_modes(path: Path) -> dict[Path, int]:
    return {folder: folder.stat().st_mode for folder in path.parents}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    # A home below a private (0700) folder, as PHLO_HOME under /root is.
    private = tmp_path_factory.mktemp("private")
    private.chmod(0o700)
    home = private / "home"
    home.mkdir()
    before = ancestor_modes(home / "x")
    up = phlo(home, "services", "up")
    try:
        assert up.returncode == 0, up.stderr
        state = json.loads((home / "services" / "state.json").read_text())
        profile = local_services.profile_values(state, "main")
        yield Running(home, before, state, profile, up.stdout + up.stderr)
    finally:
        phlo(home, "services", "down")
        local_services.down(load_settings(phlo_home=home), purge=True)


def s3_client(profile: dict[str, str]) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=profile["PHLO_S3_ENDPOINT"],
        aws_access_key_id=profile["PHLO_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=profile["PHLO_S3_SECRET_ACCESS_KEY"],
        region_name=profile["PHLO_S3_REGION"],
    )


def lake_contents(profile: dict[str, str]) -> dict[str, bytes]:
    client = s3_client(profile)
    listed = client.list_objects_v2(Bucket="lake").get("Contents", [])
    return {
        item["Key"]: client.get_object(Bucket="lake", Key=item["Key"])["Body"].read()
        for item in listed
    }


# --- PostgreSQL ------------------------------------------------------------------------------

REFUSED_BY_POSTGRES = (
    "password authentication failed",
    "no password supplied",
    "Permission denied",
)


def psql(
    host: str, port: int, user: str, database: str, password: str | None
) -> tuple[list[str], dict[str, str]]:
    command = [
        str(postgres.pg_bin() / "psql"),
        "-h",
        host,
        "-p",
        str(port),
        "-U",
        user,
        "-d",
        database,
        "-w",
        "-Atc",
        "select current_user",
    ]
    env = {"PGPASSFILE": "/dev/null", "PGCONNECT_TIMEOUT": "5"}
    if password is not None:
        env["PGPASSWORD"] = password
    return command, env


def test_postgres_wants_the_password_on_the_socket_and_the_port(
    running: Running, second_user: OtherUser
) -> None:
    port = running.state["pg_port"]
    socket_folder = str(running.pg_root / "socket")
    creds = running.state["credentials"]
    attempts = [
        (host, user, database, password)
        for host in (socket_folder, "127.0.0.1")
        for user, database in (("postgres", "postgres"), ("phlo", "phlo_lake"))
        for password in (None, "not-the-password")
    ]
    for host, user, database, password in attempts:
        command, env = psql(host, port, user, database, password)
        done = second_user.run(command, env=env, timeout=30)
        assert done.returncode != 0, (host, user, password, done.stdout)
        assert any(reason in done.stderr for reason in REFUSED_BY_POSTGRES), done.stderr
    # The owner too needs the password, on both ...
    for host in (socket_folder, "127.0.0.1"):
        command, env = psql(host, port, "postgres", "postgres", None)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode != 0 and "no password supplied" in done.stderr, done.stderr
        # ... and with it, both work.
        command, env = psql(host, port, "postgres", "postgres", creds["pg_password"])
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and done.stdout.strip() == "postgres", done.stderr
    assert stat.S_IMODE((running.pg_root / "socket").stat().st_mode) == 0o700


# --- SeaweedFS -------------------------------------------------------------------------------


def pb_string(field: int, value: str) -> bytes:
    data = value.encode()
    return bytes([field << 3 | 2, len(data)]) + data


def pb_varint(field: int, value: int) -> bytes:
    return bytes([field << 3, value])


def grpc_frame(message: bytes) -> str:
    """A gRPC request body (uncompressed, length-prefixed) as printf octal escapes."""
    frame = b"\0" + len(message).to_bytes(4, "big") + message
    return "".join(f"\\{byte:03o}" for byte in frame)


@dataclass
class Probe:
    """One request another user sends; `refused` unless it got an HTTP success (2xx/3xx) or a
    gRPC OK."""

    name: str
    shell: str


def http(url: str, method: str = "GET", *extra: str) -> list[Probe]:
    """The request over plain HTTP and over HTTPS without a client certificate."""
    probes = []
    for scheme, tls in (("http", []), ("https", ["-k"])):
        full = url.replace("http://", f"{scheme}://", 1)
        command = ["curl", "-s", "-m", "5", "-o", "/dev/null", "-D", "-", "-X", method]
        probes.append(Probe(f"{method} {full}", shlex.join([*command, *tls, *extra, full])))
    return probes


def grpc(port: int, method: str, message: bytes) -> list[Probe]:
    """A gRPC call as cleartext HTTP/2 and over TLS without a client certificate."""
    headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    probes = []
    for scheme, how in (("http", ["--http2-prior-knowledge"]), ("https", ["-k", "--http2"])):
        url = f"{scheme}://127.0.0.1:{port}/{method}"
        curl = shlex.join(
            ["curl", "-s", "-m", "5", "-o", "/dev/null", "-D", "-", *how, *headers]
            + ["--data-binary", "@-", url]
        )
        probes.append(Probe(f"gRPC {url}", f"printf '{grpc_frame(message)}' | {curl}"))
    return probes


def unix_socket(path: str) -> list[Probe]:
    base = ["curl", "-s", "-m", "5", "-o", "/dev/null", "-D", "-", "--unix-socket", path]
    return [
        Probe(f"unix {path}", shlex.join([*base, "http://localhost/"])),
        Probe(f"unix h2 {path}", shlex.join([*base, "--http2-prior-knowledge", "http://x/"])),
    ]


def answered(output: str) -> bool:
    """A gRPC OK, or (not gRPC) an HTTP success or redirect."""
    if re.search(r"^grpc-status:", output, re.MULTILINE | re.IGNORECASE):
        return re.search(r"^grpc-status: 0\s*$", output, re.MULTILINE | re.IGNORECASE) is not None
    statuses = re.findall(r"^HTTP/[\d.]+ (\d{3})", output, re.MULTILINE)
    return any(200 <= int(code) < 400 for code in statuses)


def run_probes(user: OtherUser, probes: list[Probe]) -> dict[str, str]:
    """Every probe as the other user, in one shell: name -> what came back (headers)."""
    script = "\n".join(
        f"echo {shlex.quote(f'>>> {number} {probe.name}')}; {probe.shell}; echo"
        for number, probe in enumerate(probes)
    )
    done = user.run(["sh", "-c", script], timeout=60 + 12 * len(probes))
    results: dict[str, str] = {}
    for chunk in done.stdout.split(">>> ")[1:]:
        name, _, output = chunk.partition("\n")
        results[name] = output
    assert len(results) == len(probes), done.stderr
    return results


def weed_listeners(pid: int) -> tuple[set[int], set[str]]:
    """TCP ports and Unix socket paths the SeaweedFS process listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    paths: set[str] = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        listening = fields[3] == "00010000"  # __SO_ACCEPTCON
        if len(fields) >= 8 and fields[6] in inodes and listening and fields[7][0] != "@":
            paths.add(fields[7])
    return ports, paths


def volume_fids(running: Running) -> list[str]:
    """The lake's needles as file ids (volume,needle+cookie), read from the volume files."""
    data = running.home / "services" / "s3" / "data"
    fids = []
    for index in sorted(data.glob("lake_*.idx")):
        volume = index.stem.split("_", 1)[1]
        listed = subprocess.run(
            [str(s3.weed_bin()), "export", f"-dir={data}", f"-volumeId={volume}"]
            + ["-collection=lake"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        fids += [line.split("\t", 1)[0] for line in listed.stdout.splitlines()[1:] if line]
    return fids


def test_seaweedfs_internal_ports_refuse_another_user(
    running: Running, second_user: OtherUser
) -> None:
    client = s3_client(running.profile)
    for key, body in OBJECTS.items():
        client.put_object(Bucket="lake", Key=key, Body=body)
    before = lake_contents(running.profile)
    assert set(OBJECTS) <= set(before)
    fids = volume_fids(running)
    assert fids, "the objects are on a volume"
    volume = fids[0].split(",", 1)[0]

    ports = running.state["weed_ports"]
    master = f"http://127.0.0.1:{ports['master.port']}"
    volume_server = f"http://127.0.0.1:{ports['volume.port']}"
    filer = f"http://127.0.0.1:{ports['filer.port']}"
    s3 = running.profile["PHLO_S3_ENDPOINT"]
    key = next(iter(OBJECTS))
    probes: list[Probe] = []
    # The master: assign (hands out write tokens), status, lookup, and delete a collection.
    for path in (
        "/dir/assign",
        "/dir/assign?collection=lake",
        "/vol/status",
        "/dir/status",
        f"/dir/lookup?volumeId={volume}",
        "/cluster/status",
        "/vol/grow?collection=lake&count=1",
        f"/{fids[0]}",
        "/col/delete?collection=lake",
    ):
        probes += http(master + path)
    # The volume server: read, delete and write needles, its status.
    for fid in fids:
        probes += http(f"{volume_server}/{fid}")
        probes += http(f"{volume_server}/{fid}", "DELETE")
    probes += http(f"{volume_server}/{volume},01deadbeef01", "POST", "-F", "f=planted")
    probes += http(f"{volume_server}/status")
    probes += http(f"{volume_server}/ui/index.html")
    # The filer: list the bucket, read, write and delete objects.
    for path, method in (
        ("/buckets/lake/", "GET"),
        ("/buckets/lake/ducklake/main/", "GET"),
        (f"/buckets/lake/{key}", "GET"),
        (f"/buckets/lake/{key}?metadata=true", "GET"),
        ("/buckets/lake/ducklake/planted.parquet", "PUT"),
        (f"/buckets/lake/{key}", "DELETE"),
        ("/buckets/lake/ducklake/?recursive=true", "DELETE"),
    ):
        probes += http(filer + path, method, "-H", "Accept: application/json")
    # gRPC: list and delete collections, volumes, needles, entries; the S3 gateway's IAM cache.
    grpc_port = {name: ports[f"{name}.port.grpc"] for name in ("master", "volume", "filer")}
    probes += grpc(grpc_port["master"], "master_pb.Seaweed/CollectionList", pb_varint(1, 1))
    probes += grpc(grpc_port["master"], "master_pb.Seaweed/VolumeList", b"")
    probes += grpc(grpc_port["master"], "master_pb.Seaweed/CollectionDelete", pb_string(1, "lake"))
    probes += grpc(
        grpc_port["filer"], "filer_pb.SeaweedFiler/ListEntries", pb_string(1, "/buckets/lake")
    )
    probes += grpc(
        grpc_port["filer"],
        "filer_pb.SeaweedFiler/DeleteEntry",
        pb_string(1, "/buckets/lake")
        + pb_string(2, "ducklake")
        + pb_varint(4, 1)
        + pb_varint(5, 1),
    )
    probes += grpc(
        grpc_port["volume"], "volume_server_pb.VolumeServer/BatchDelete", pb_string(1, fids[0])
    )
    probes += grpc(
        grpc_port["volume"],
        "volume_server_pb.VolumeServer/VolumeDelete",
        pb_varint(1, int(volume)),
    )
    probes += grpc(ports["s3.port.grpc"], "messaging_pb.SeaweedS3IamCache/ListPolicies", b"")
    # Every port the process listens on but S3's, whatever it serves, and its Unix sockets.
    pid = int((running.home / "services" / "s3" / "weed.pid").read_text())
    tcp_ports, socket_paths = weed_listeners(pid)
    s3_port = running.state["s3_port"]
    assert s3_port in tcp_ports and set(ports.values()) <= tcp_ports
    for port in sorted(tcp_ports - {s3_port}):
        probes += http(f"http://127.0.0.1:{port}/")
        probes += grpc(port, "grpc.health.v1.Health/Check", b"")
    for path in sorted(socket_paths):
        probes += unix_socket(path)
    # S3 without the keys.
    probes += [
        Probe(
            f"S3 {method} {url}",
            shlex.join(
                ["curl", "-s", "-m", "5", "-o", "/dev/null"] + ["-D", "-", "-X", method, url]
            ),
        )
        for method, url in (
            ("GET", f"{s3}/lake?list-type=2"),
            ("GET", f"{s3}/lake/{key}"),
            ("DELETE", f"{s3}/lake/{key}"),
        )
    ]

    results = run_probes(second_user, probes)
    reached = {name: output.strip() for name, output in results.items() if answered(output)}
    assert reached == {}
    # The probes did reach the machine's servers: S3 answered them, with a refusal.
    s3_answers = [output for name, output in results.items() if name.split()[1] == "S3"]
    assert len(s3_answers) == 3 and all("HTTP/1.1 403" in out for out in s3_answers)
    # The lake is as it was, through S3 with the keys.
    assert lake_contents(running.profile) == before


def test_seaweedfs_keys_are_owner_only_and_never_logged(running: Running) -> None:
    s3_dir = running.home / "services" / "s3"
    security = s3_dir / "security.toml"
    text = security.read_text()
    for section in (
        "[jwt.signing]",
        "[jwt.signing.read]",
        "[jwt.filer_signing]",
        "[jwt.filer_signing.read]",
        "[grpc.master]",
        "[https.master]",
        "[https.client]",
    ):
        assert section in text
    owner_only = [security, s3_dir / "s3.json", *(s3_dir / "tls").iterdir()]
    for path in owner_only:
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600, path
    for folder in (running.home / "services", s3_dir / "tls"):
        assert stat.S_IMODE(folder.lstat().st_mode) == 0o700, folder
    # Keys of this install: no secret in the output of `up` or the servers' logs.
    secrets = [value for value in running.state["credentials"].values() if len(value) > 12]
    logs = [s3_dir / "weed.log", running.pg_root / "postgres.log"]
    for secret in secrets:
        assert secret not in running.output
        for log in logs:
            assert secret not in log.read_text(errors="replace"), log


# --- the folders above PHLO_HOME ---------------------------------------------------------------


def test_up_leaves_the_folders_above_the_home_alone(running: Running) -> None:
    assert ancestor_modes(running.home / "x") == running.modes_before
    assert stat.S_IMODE(running.home.parent.stat().st_mode) == 0o700
