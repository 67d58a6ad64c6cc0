"""What a deployment derives from the workspace file: one gRPC server per location."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from phlo_core.settings import load_settings
from phlo_core.workspace import WorkspaceError, grpc_workspace, location_refs


def servers(text: str) -> list[tuple[str, str, int]]:
    document = yaml.safe_load(text)
    return [
        (
            entry["grpc_server"]["location_name"],
            entry["grpc_server"]["host"],
            entry["grpc_server"]["port"],
        )
        for entry in document["load_from"]
    ]


def test_each_location_of_the_workspace_gets_a_server_on_consecutive_ports() -> None:
    settings = load_settings()
    names = [ref.name for ref in location_refs(settings)]
    text = grpc_workspace(settings, host="10.0.0.5", port=4100)
    assert servers(text) == [(name, "10.0.0.5", 4100 + i) for i, name in enumerate(names)]
    for i, ref in enumerate(location_refs(settings)):  # and the command that starts each
        assert f"dist/{ref.name}.pex api grpc -m {ref.module} -h 10.0.0.5 -p {4100 + i}" in text


def test_hosts_by_name_put_each_server_at_its_locations_name() -> None:
    settings = load_settings()
    found = servers(grpc_workspace(settings, host=None, port=4000))
    assert found == [(ref.name, ref.name, 4000) for ref in location_refs(settings)]


def test_a_workspace_of_other_locations_derives_their_servers(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_module: {module_name: acme.orders.definitions, location_name: orders}\n"
    )
    settings = load_settings(phlo_workspace=workspace)
    assert servers(grpc_workspace(settings, host="127.0.0.1", port=5000)) == [
        ("orders", "127.0.0.1", 5000)
    ]
    workspace.write_text("load_from: []\n")
    with pytest.raises(WorkspaceError, match="lists no python_module"):
        grpc_workspace(settings, host="127.0.0.1", port=5000)
