"""The Celery workers' broker of `phlo services up --with workers`: Debian's redis-server on
loopback, with a password generated at the first `up`.

Redis, not Celery's filesystem transport, is the default: workers on other machines reach a
broker over the network, where a folder of message files would need a file system every machine
shares; Redis also keeps the tasks' results (the executor waits on them), which the filesystem
transport cannot. It listens on 127.0.0.1 only, wants its password on every connection
(`requirepass`; protected mode on), and keeps its files (configuration with the password,
snapshot of the queue) in PHLO_HOME/services/broker, owner only. Workers on other machines need
a broker they can reach: a Redis of your own in PHLO_CELERY_BROKER_URL.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from phlo_core.services.layout import (
    Layout,
    ServiceError,
    is_zombie,
    own_folder,
    process_alive,
    stop_group,
    write_private_file,
)

PROGRAM = "redis-server"


def broker_dir(where: Layout) -> Path:
    return where.root / "broker"


def _pid_file(where: Layout) -> Path:
    return broker_dir(where) / "redis.pid"


def broker_log(where: Layout) -> Path:
    return broker_dir(where) / "redis.log"


def broker_url(port: int, password: str) -> str:
    """The URL workers and runs reach the broker at (database 0: tasks and their results)."""
    return f"redis://:{password}@127.0.0.1:{port}/0"


def redis_bin() -> Path:
    found = shutil.which(PROGRAM) or (
        f"/usr/bin/{PROGRAM}" if Path(f"/usr/bin/{PROGRAM}").exists() else None
    )
    if found is None:
        raise ServiceError(
            "redis-server not found: install Debian's redis-server (apt-get install "
            "redis-server), or set PHLO_CELERY_BROKER_URL to a Redis of your own"
        )
    return Path(found)


def broker_running(where: Layout) -> int | None:
    try:
        pid = int(_pid_file(where).read_text())
    except (OSError, ValueError):
        return None
    return pid if process_alive(pid, PROGRAM) else None


def broker_answers(port: int, password: str, timeout: float = 1.0) -> bool:
    """Redis answers PONG to a PING after AUTH with the password (RESP over a socket: no
    client library needed to ask)."""
    auth = f"*2\r\n$4\r\nAUTH\r\n${len(password)}\r\n{password}\r\n*1\r\n$4\r\nPING\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            connection.sendall(auth.encode())
            answer = b""
            while b"PONG" not in answer and len(answer) < 512:
                chunk = connection.recv(256)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return False
    return answer.startswith(b"+OK") and b"+PONG" in answer


def broker_config(folder: str, port: int, password: str) -> str:
    """redis-server's configuration: loopback, the password, its snapshot in `folder`."""
    return "\n".join(
        [
            "# Written by phlo (owner only: it holds the password).",
            "bind 127.0.0.1",
            f"port {port}",
            "protected-mode yes",
            f'requirepass "{password}"',
            f'dir "{folder}"',
            'dbfilename "queue.rdb"',
            "save 60 1",
            "daemonize no",
            'logfile ""',
            "loglevel notice",
            "",
        ]
    )


def broker_start(where: Layout, port: int, password: str) -> None:
    folder = broker_dir(where)
    own_folder(folder)
    config = folder / "redis.conf"
    write_private_file(config, broker_config(str(folder), port, password))
    with broker_log(where).open("ab") as log:
        process = subprocess.Popen(
            [str(redis_bin()), str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=folder,
            umask=0o077,
        )
    _pid_file(where).write_text(str(process.pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = broker_log(where).read_text(errors="replace").strip().splitlines()[-1:]
            raise ServiceError(f"redis-server exited at start: {tail[0] if tail else '?'}")
        if broker_answers(port, password):
            return
        time.sleep(0.1)
    raise ServiceError(f"redis-server did not answer on 127.0.0.1:{port} within 30 s")


def broker_stop(where: Layout) -> None:
    pid = broker_running(where)
    if pid is None:
        return
    stop_group(pid, lambda: broker_running(where) is None or is_zombie(pid))
    _pid_file(where).unlink(missing_ok=True)
