"""The ports phlo chooses for its servers, and what it says when SeaweedFS dies at start."""

from __future__ import annotations

import socket
from contextlib import closing

import pytest

from phlo_core.services import layout
from phlo_core.services.layout import ephemeral_ports, free_port, port_in_use
from phlo_core.services.s3 import weed_failure


def test_chosen_ports_are_free_distinct_and_never_ones_the_kernel_gives_outgoing_connections() -> (
    None
):
    ephemeral = ephemeral_ports()
    outside = 65536 - layout.FIRST_CHOSEN_PORT - len(ephemeral)
    if outside < 2000:
        pytest.skip(f"ip_local_port_range {ephemeral} leaves {outside} ports to choose from")
    ports = [free_port() for _ in range(200)]
    assert all(port not in ephemeral for port in ports)
    assert all(layout.FIRST_CHOSEN_PORT <= port < 65536 for port in ports)
    assert not any(port_in_use(port) for port in ports)
    assert len(set(ports)) == len(ports)  # a start's several ports: never the same one twice


def test_a_port_held_by_a_connected_client_is_not_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    with closing(socket.socket()) as server, closing(socket.socket()) as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.connect(server.getsockname())
        held = client.getsockname()[1]  # an outgoing connection's port
        assert port_in_use(held)
        monkeypatch.setattr(layout, "ephemeral_ports", lambda: range(0))
        calls = iter([held, held])  # offered twice, then another port
        monkeypatch.setattr(
            layout._random, "choice", lambda pool: next(calls, pool[len(pool) // 2])
        )
        port = free_port()
        assert port != held
        assert not port_in_use(port)


LOG = """\
I1208 00:24:19.301112 mini.go:1101 Mini started with auto-calculated optimal volume size
E1208 00:24:19.417242 mini.go:1244 Port allocation failed: port 23456 for Filer (specified by \
flag filer.port) is not available on 127.0.0.1 and cannot be used
goroutine 1 [running]:
github.com/seaweedfs/seaweedfs/weed/command.startMiniServices(...)
created by github.com/seaweedfs/seaweedfs/weed/command.startMiniServices in goroutine 1
\tgithub.com/seaweedfs/seaweedfs/weed/command/mini.go:1445 +0xdc
"""


def test_seaweedfs_failing_at_start_is_told_by_its_first_error_not_its_stack() -> None:
    assert weed_failure(LOG).startswith("E1208 00:24:19.417242 mini.go:1244 Port allocation")
    assert weed_failure("panic: runtime error\n\ngoroutine 7 [running]:\n") == (
        "panic: runtime error"
    )
    assert weed_failure("I1208 started\nlast words\n") == "last words"
    fatal = "E1208 01:00:00 master.go:1 a peer not up yet\nF1208 01:00:01 filer.go:9 bind: in use\n"
    assert weed_failure(fatal) == "F1208 01:00:01 filer.go:9 bind: in use"  # fatal over error
    assert weed_failure("") == ""
