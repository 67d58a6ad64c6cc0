"""The warm server behind `phlo materialize` and `phlo backfill`: real `phlo` processes against
a local Nightscout-compatible server, with the server on (the rest of the suite turns it off).

What a user must not be able to tell apart from a direct run: output, exit codes, Ctrl-C, a
killed command, the tables. And what they can: it starts in the background, serves the next
command whatever its settings, stops when asked or idle."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.lakehouse.connect import query
from phlo_core.settings import load_settings
from tests.conftest import TEST_SECRET
from tests.e2e.helpers import served_readings
from tests.other_user import RUNUSER, OtherUser

PHLO = str(Path(sys.executable).with_name("phlo"))
ZONE = "UTC"
UTC = ZoneInfo(ZONE)
SELECTION = "dlt_glucose_entries,stg_glucose_entries"


@pytest.fixture(scope="module")
def nightscout() -> Iterator[SampleNightscoutServer]:
    with SampleNightscoutServer(timezone=ZONE, api_secret=TEST_SECRET) as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, nightscout: SampleNightscoutServer) -> Iterator[dict[str, str]]:
    """A user's shell with the server on; its sockets in a folder of this test's own."""
    # In /tmp, not tmp_path: a socket's path must fit in 107 bytes.
    run = Path(tempfile.mkdtemp(prefix="phlo-test-", dir="/tmp"))
    values = {
        **os.environ,
        "PHLO_SERVER": "1",
        "XDG_RUNTIME_DIR": str(run),
        "PHLO_HOME": str(tmp_path / "home"),
        "PHLO_TIMEZONE": ZONE,
        "PHLO_PARTITION_START": "2024-01-01",
        "NIGHTSCOUT_URL": nightscout.url,
        "NIGHTSCOUT_API_SECRET": TEST_SECRET,
    }
    yield values
    phlo(values, "server", "stop")
    for lock in (run / f"phlo-{os.getuid()}").glob("*.lock"):
        pid = lock.read_text().strip()
        if pid.isdigit():
            wait_until(lambda p=int(pid): not alive(p), f"server {pid} to stop")
    shutil.rmtree(run, ignore_errors=True)


def phlo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PHLO, *args],
        env=env,
        cwd=env["PHLO_HOME"].rsplit("/", 1)[0],
        capture_output=True,
        text=True,
        timeout=300,
    )


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, what: str, seconds: float = 120) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def folder(env: dict[str, str]) -> Path:
    return Path(env["XDG_RUNTIME_DIR"]) / f"phlo-{os.getuid()}"


def sockets(env: dict[str, str]) -> list[Path]:
    return sorted(folder(env).glob("*.sock"))


def none_running(env: dict[str, str]) -> bool:
    return phlo(env, "server", "status").stdout.strip() == "no phlo server running"


def served(env: dict[str, str]) -> list[tuple[int, str]]:
    """(child pid, exit code) of every command the servers ran, from their logs."""
    found = []
    for log in folder(env).glob("*.log"):
        found += [(int(p), c) for p, c in re.findall(r"pid (\d+) exited (-?\d+)", log.read_text())]
    return found


def day_rows(env: dict[str, str], day: str) -> int:
    settings = load_settings(phlo_home=Path(env["PHLO_HOME"]), phlo_timezone=ZONE)
    dt.date.fromisoformat(day)  # a date, not SQL
    sql = f"select count(*) from bronze.stg_glucose_entries where reading_date = '{day}'"
    try:
        return int(query(sql, settings).rows[0][0])
    except Exception as exc:  # a home with no such table yet holds none of the day
        if "does not exist" in str(exc):
            return 0
        raise


def start_served(env: dict[str, str], args: list[str], until: str) -> subprocess.Popen[str]:
    """A served `phlo ARGS`, as a terminal's foreground job, once its stderr says `until`."""
    process = subprocess.Popen(
        [PHLO, *args],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if until in line:
            return process
    pytest.fail(f"{until!r} never came: exit {process.wait()}")


def start_server(env: dict[str, str]) -> None:
    """A command (bad input, run directly) that starts the server; until it listens."""
    phlo(env, "materialize", "nosuch", "--partition", "2024-01-03")
    wait_until(lambda: sockets(env), "the server to listen")


def server_logs(env: dict[str, str]) -> str:
    return "".join(log.read_text() for log in folder(env).glob("*.log"))


def assert_days_as_served(env: dict[str, str], days: list[str]) -> None:
    """stg_glucose_entries holds each day's readings exactly as the server holds them."""
    secret_sha1 = hashlib.sha1(TEST_SECRET.encode()).hexdigest()
    for day in days:
        readings = served_readings(
            env["NIGHTSCOUT_URL"], secret_sha1, dt.date.fromisoformat(day), UTC
        )
        assert day_rows(env, day) == len(readings) > 250


def run_statuses(env: dict[str, str]) -> set[object]:
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(Path(env["PHLO_HOME"]) / "dagster")) as instance:
        return {record.dagster_run.status for record in instance.get_run_records()}


def test_the_first_command_starts_a_server_that_runs_the_next_ones_as_phlo_would(
    env: dict[str, str],
) -> None:
    first = phlo(env, "materialize", SELECTION, "--partition", "2024-01-02")
    assert first.returncode == 0, first.stderr
    wait_until(lambda: sockets(env), "the server to listen")
    assert served(env) == []  # the first command ran itself

    second = phlo(env, "materialize", SELECTION, "--partition", "2024-01-03")
    assert second.returncode == 0, second.stderr
    assert "nightscout: succeeded: 2 asset(s) for 2024-01-03" in second.stdout
    assert "materialized stg_glucose_entries [2024-01-03]" in second.stderr  # progress
    assert [code for _, code in served(env)] == ["0"]
    assert_days_as_served(env, ["2024-01-02", "2024-01-03"])
    assert TEST_SECRET not in server_logs(env)

    # Bad input: the same one line and exit code 2, from the served command.
    bad = phlo(env, "materialize", "nosuch", "--partition", "2024-01-03")
    assert bad.returncode == 2
    assert bad.stderr.startswith("phlo: error: unknown asset 'nosuch'")
    assert len(bad.stderr.strip().splitlines()) == 1
    assert [code for _, code in served(env)] == ["0", "2"]

    # Other settings, another home, another folder: the same server serves them, as they are.
    other_home = Path(env["PHLO_HOME"]).with_name("other-home")
    other = {**env, "PHLO_HOME": str(other_home), "PHLO_MAX_SHRINK_PCT": "20", "UNRELATED": "1"}
    done = phlo(other, "materialize", SELECTION, "--partition", "2024-01-04")
    assert done.returncode == 0, done.stderr
    assert day_rows(other, "2024-01-04") > 250 and day_rows(env, "2024-01-04") == 0
    assert day_rows(other, "2024-01-02") == 0  # its own lakehouse, not the first home's
    blank = phlo({**other, "NIGHTSCOUT_URL": ""}, "materialize", SELECTION, "-p", "2024-01-05")
    assert blank.returncode == 2
    assert blank.stderr.splitlines()[-1].startswith("phlo: error: NIGHTSCOUT_URL is not set")
    assert [code for _, code in served(env)] == ["0", "2", "0", "2"]
    assert len(sockets(env)) == 1

    # What the interpreter reads when it starts (its locale here) is another server's.
    started_otherwise = {**env, "LC_ALL": "C.UTF-8", "PHLO_SERVER_IDLE_SECONDS": "300"}
    bad = phlo(started_otherwise, "materialize", "nosuch", "--partition", "2024-01-03")
    assert bad.returncode == 2
    wait_until(lambda: len(sockets(env)) == 2, "a second server for another locale")
    listed = phlo(env, "server", "status")
    assert listed.returncode == 0 and len(listed.stdout.strip().splitlines()) == 2
    for line in listed.stdout.splitlines():
        assert re.match(r"pid \d+  code [0-9a-f]{20}  \d+ MB  up \d+(s|m\d\ds)  /", line), line
    stopped = phlo(env, "server", "stop")
    assert stopped.stdout.strip() == "stopped 2 phlo server(s)"
    wait_until(lambda: not sockets(env), "the servers to stop listening")
    wait_until(lambda: none_running(env), "the servers to exit")


def test_ctrl_c_and_kill_reach_the_command_the_server_runs(env: dict[str, str]) -> None:
    from dagster import DagsterRunStatus

    start_server(env)
    step = "running dlt_glucose_entries"
    materialize = ["materialize", SELECTION, "--verbose", "--partition"]
    interrupted = start_served(env, [*materialize, "2024-02-01..2024-02-20"], step)
    os.killpg(interrupted.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground job
    _, stderr = interrupted.communicate(timeout=120)
    assert interrupted.returncode == 130, stderr
    assert "interrupted" in stderr
    [(child, code)] = served(env)
    assert code == "130"
    statuses = run_statuses(env)
    assert DagsterRunStatus.STARTED not in statuses and DagsterRunStatus.CANCELED in statuses

    killed = start_served(env, [*materialize, "2024-03-01..2024-03-20"], step)
    os.killpg(killed.pid, signal.SIGKILL)  # the command, killed: so is what it was running
    killed.wait(timeout=30)
    wait_until(lambda: len(served(env)) == 2, "the served command to end")
    child, code = served(env)[1]
    assert code == "137" and not alive(child)


def test_an_idle_server_exits(env: dict[str, str]) -> None:
    idle = {**env, "PHLO_SERVER_IDLE_SECONDS": "1"}
    assert phlo(idle, "materialize", "nosuch", "--partition", "2024-01-03").returncode == 2
    wait_until(lambda: "serving" in server_logs(env), "the server to be warm")
    # It warmed up without making an instance (or anything else) the command did not make.
    assert not (Path(env["PHLO_HOME"]) / "dagster").exists()
    wait_until(lambda: not sockets(env), "the idle server to stop listening")
    wait_until(lambda: none_running(env), "the idle server to exit")


@pytest.mark.slow  # keeps `make test` under 15 minutes; CI runs it
def test_a_served_backfill_forks_its_workers_in_the_server(env: dict[str, str]) -> None:
    """`phlo backfill --parallel 2` through the server: its worker is forked warm by the
    server, in the backfill's process group, so Ctrl-C reaches it as in a terminal."""
    from dagster import DagsterRunStatus

    start_server(env)
    days = ["--start-date", "2024-01-05", "--end-date", "2024-01-08", "--only"]
    done = phlo(env, "backfill", SELECTION, *days, "--chunk-size", "1", "--parallel", "2")
    assert done.returncode == 0, done.stderr
    assert "4 day(s) done, 0 skipped (done before), 0 failed" in done.stdout
    logs = server_logs(env)
    assert re.search(r"pid \d+: backfill worker \d{8}-\d{6}-", logs), logs
    assert [code for _, code in served(env)] == ["0", "0"]  # the worker, the backfill
    assert_days_as_served(env, ["2024-01-05", "2024-01-06", "2024-01-07", "2024-01-08"])

    backfill = ["backfill", SELECTION, "--start-date", "2024-02-01", "--end-date", "2024-02-20"]
    process = start_served(  # once a range is done: the worker is running its own
        env, [*backfill, "--only", "--chunk-size", "2", "--parallel", "2"], " ok 2024-02-"
    )
    interrupted = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert time.monotonic() - interrupted < 30, stderr  # the worker stopped (not killed after 60 s)
    assert DagsterRunStatus.STARTED not in run_statuses(env)


def server_pids(env: dict[str, str]) -> list[int]:
    """The pids the servers wrote in their lock files."""
    texts = (lock.read_text().strip() for lock in folder(env).glob("*.lock"))
    return [int(text) for text in texts if text.isdigit()]


def test_a_command_outlives_its_killed_server_and_reports_its_own_outcome(
    env: dict[str, str],
) -> None:
    """SIGKILL the server while it runs a command: the command goes on, writes its days, and
    its client exits with the command's own exit code (not "the server ended")."""
    start_server(env)
    [server] = server_pids(env)
    args = ["materialize", SELECTION, "--verbose", "--partition", "2024-04-01..2024-04-03"]
    process = start_served(env, args, "running dlt_glucose_entries")
    os.kill(server, signal.SIGKILL)
    wait_until(lambda: not alive(server), "the server to die")
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert "ended before" not in stderr and "lost" not in stderr
    assert_days_as_served(env, ["2024-04-01", "2024-04-02", "2024-04-03"])
    [(_, code)] = served(env)  # the keeper logged it, although its server was gone
    assert code == "0"


def test_a_command_whose_settings_name_another_workspace_is_run_by_its_client(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A client finds its server by the workspace file it reads without loading the settings
    (`configured_workspace`). Should that ever differ from the settings' own, the child, which
    loads them, runs nothing and the client runs the command itself: a client that took this
    server for another workspace's is told so (its own signal handlers back)."""
    from phlo_cli import server
    from phlo_core.workspace import DEFAULT_WORKSPACE

    start_server(env)
    [path] = sockets(env)
    other = Path(env["PHLO_HOME"]).with_name("workspace.yaml")
    other.write_text(DEFAULT_WORKSPACE.read_text())
    for name, value in {**env, "PHLO_WORKSPACE": str(other)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(other.parent)
    handler = signal.getsignal(signal.SIGINT)
    with server._connect(path) as sock:
        args = ["materialize", "nosuch", "--partition", "2024-01-03"]
        assert server._converse(sock, args) is None
    assert capfd.readouterr().err == (
        f"phlo: warning: not using the phlo server: its settings name workspace {other}, the "
        f"server's is {DEFAULT_WORKSPACE}; running directly\n"
    )
    assert signal.getsignal(signal.SIGINT) is handler
    wait_until(lambda: served(env) != [], "the keeper to log its command's end")
    assert [code for _, code in served(env)] == ["0"]  # ran nothing
    # The same settings with the server's workspace: served.
    monkeypatch.delenv("PHLO_WORKSPACE")
    with server._connect(path) as sock:
        assert server._converse(sock, args) == 2
    assert capfd.readouterr().err.startswith("phlo: error: unknown asset 'nosuch'")


@pytest.mark.slow  # keeps `make test` under 15 minutes; CI runs it
def test_a_server_whose_socket_file_is_deleted_exits_and_a_new_one_serves(
    env: dict[str, str],
) -> None:
    """A server nobody can reach any more does not keep its key: it exits within seconds, and
    the next command starts a new server that serves the one after."""
    start_server(env)
    [server] = server_pids(env)
    [socket_file] = sockets(env)
    socket_file.unlink()
    wait_until(lambda: not alive(server), "the server without a socket to exit", seconds=5)

    assert phlo(env, "materialize", "nosuch", "--partition", "2024-01-03").returncode == 2
    wait_until(lambda: sockets(env) == [socket_file], "a new server to listen")
    assert server_pids(env) != [server] and all(alive(pid) for pid in server_pids(env))
    assert phlo(env, "materialize", "nosuch", "--partition", "2024-01-03").returncode == 2
    assert [code for _, code in served(env)] == ["2"]


# --- other users of the machine ----------------------------------------------------------------

WARNING = "phlo: warning: not using the phlo server: "
LISTENER = """
import os, selectors, socket, sys
path, received, stop = sys.argv[1:]
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(16)
with open(received, "ab") as out:
    while not os.path.exists(stop):
        ready, _, _ = __import__("select").select([listener], [], [], 0.2)
        if not ready:
            continue
        conn, _ = listener.accept()
        conn.settimeout(3)
        try:
            while data := conn.recv(65536):
                out.write(data)
                out.flush()
        except OSError:
            pass
        conn.close()
"""


@pytest.fixture
def shared_run(env: dict[str, str]) -> Path:
    """The test's XDG_RUNTIME_DIR made like /tmp (1777): other users can plant things in it.
    (It is removed with the `env` fixture.)"""
    run = Path(env["XDG_RUNTIME_DIR"])
    os.chmod(run, 0o1777)
    return run


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(WARNING)]


@pytest.mark.slow  # each case pays a direct (cold) phlo run
@pytest.mark.parametrize("planted", ["symlink to a folder of ours", "symlink", "folder"])
def test_a_runtime_folder_planted_by_another_user_is_refused(
    env: dict[str, str], shared_run: Path, second_user: OtherUser, planted: str
) -> None:
    """Another user plants a symlink where the client's folder goes (to a folder of theirs, or
    to one of this user's, private), or a folder of their own: the client creates nothing
    there, starts no server, runs the command directly and says why in one line."""
    theirs = shared_run / "theirs"
    assert second_user.run(["mkdir", "-m", "0777", str(theirs)]).returncode == 0
    target = theirs
    if planted == "symlink to a folder of ours":
        target = shared_run / "ours"
        target.mkdir(mode=0o700)
    place = folder(env)
    command = ["mkdir", "-m", "0777", str(place)]
    if planted != "folder":
        command = ["ln", "-s", str(target), str(place)]
    assert second_user.run(command).returncode == 0

    bad = phlo(env, "materialize", "nosuch", "--partition", "2024-01-03")
    assert bad.returncode == 2  # run directly: its own error, its own exit code
    assert "phlo: error: unknown asset 'nosuch'" in bad.stderr
    assert list(target.iterdir()) == [] and list(theirs.iterdir()) == []
    assert os.lstat(place).st_uid == second_user.uid  # left as it was
    [why] = warnings(bad.stderr)
    reason = "is a symlink" if planted != "folder" else "belongs to another user"
    assert reason in why and why.endswith("running directly"), why


def test_a_server_of_another_user_in_the_clients_place_receives_nothing(
    env: dict[str, str], shared_run: Path, second_user: OtherUser
) -> None:
    """Another user's listener put where the client connects (a socket file can be renamed into
    place): the client checks the peer's uid before it sends anything, so the listener gets
    neither the environment (secrets) nor the standard streams; the command runs directly."""
    start_server(env)  # the client's key: the name its socket has
    [socket_file] = sockets(env)
    phlo(env, "server", "stop")
    wait_until(lambda: none_running(env), "the server to exit")

    theirs = shared_run / "theirs"
    assert second_user.run(["mkdir", "-m", "0755", str(theirs)]).returncode == 0
    planted, received, stop = theirs / "s.sock", theirs / "received", theirs / "stop"
    listener = subprocess.Popen(
        [RUNUSER, "-u", second_user.name, "--", "/usr/bin/python3", "-I", "-c", LISTENER]
        + [str(planted), str(received), str(stop)],
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        cwd="/",
    )
    try:
        wait_until(planted.exists, "the other user's listener")
        os.rename(planted, socket_file)  # root can: the test plays the trick's last step
        done = phlo(env, "materialize", SELECTION, "--partition", "2024-01-02")
    finally:
        stop.touch()
        listener.wait(timeout=30)
    data = received.read_bytes() if received.exists() else b""
    leaked = TEST_SECRET.encode() in data  # not in the assert: pytest would print the bytes
    assert not leaked, "the secret reached the other user's listener"
    size = len(data)
    assert size == 0, f"{size} bytes reached the other user's listener"
    assert done.returncode == 0, done.stderr
    assert "nightscout: succeeded: 2 asset(s) for 2024-01-02" in done.stdout
    [why] = warnings(done.stderr)
    assert f"runs as another user (uid {second_user.uid})" in why, why
    assert_days_as_served(env, ["2024-01-02"])
