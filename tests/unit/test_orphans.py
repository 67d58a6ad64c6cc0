"""A run is judged gone only from its own host and pid namespace: containers on the host's
network share its host name, not its pids."""

from __future__ import annotations

import socket
import subprocess

from phlo_core.runs.orphans import (
    HOST_TAG,
    PID_NAMESPACE_TAG,
    PID_TAG,
    process_gone,
    process_tags,
)


def finished_pid() -> str:
    done = subprocess.Popen(["true"])
    done.wait()
    return str(done.pid)


def test_a_process_of_this_namespace_that_ended_is_gone() -> None:
    tags = {**process_tags(), PID_TAG: finished_pid()}
    assert tags[PID_NAMESPACE_TAG].isdigit()
    assert process_gone(tags)
    assert not process_gone(process_tags())  # this one runs


def test_a_run_of_another_namespace_or_host_or_untagged_is_never_judged() -> None:
    ended = {**process_tags(), PID_TAG: finished_pid()}
    assert not process_gone({**ended, PID_NAMESPACE_TAG: "4026531999"})
    assert not process_gone({**ended, HOST_TAG: socket.gethostname() + "-other"})
    assert not process_gone({k: v for k, v in ended.items() if k != PID_NAMESPACE_TAG})
