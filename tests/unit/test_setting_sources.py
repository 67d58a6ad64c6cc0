"""The warm server's client finds the workspace file without pydantic
(`configured_workspace`): it must be the file the settings name, wherever they are set."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from phlo_core.settings import load_settings
from phlo_core.workspace import DEFAULT_WORKSPACE, configured_workspace, workspace_file


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current folder of its own and no phlo variable in the environment, in any case."""
    for name in list(os.environ):
        if name.lower() in ("phlo_workspace", "phlo_home"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def both() -> tuple[Path, Path]:
    """(what the client finds, what the settings say)."""
    return configured_workspace(), workspace_file(load_settings())


def services_env(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "services.env").write_text(text)


def test_unset_anywhere_is_phlos_own_workspace(folder: Path) -> None:
    assert both() == (DEFAULT_WORKSPACE, DEFAULT_WORKSPACE)


@pytest.mark.parametrize("name", ["PHLO_WORKSPACE", "phlo_workspace", "Phlo_Workspace"])
def test_the_environment_in_any_case(
    folder: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "ws/w.yaml")
    assert both() == (folder / "ws/w.yaml", folder / "ws/w.yaml")


def test_dotenv_then_services_env_of_the_home_dotenv_names(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services_env(folder / "h", "PHLO_WORKSPACE=/srv/from-services.yaml\n")
    (folder / ".env").write_text("PHLO_HOME=h\n")
    assert both() == (Path("/srv/from-services.yaml"),) * 2
    # .env wins over services.env; quoting and `export` as python-dotenv reads them
    (folder / ".env").write_text("PHLO_HOME=h\nexport phlo_workspace='~/my ws.yaml'  # mine\n")
    expected = folder / "user" / "my ws.yaml"
    assert both() == (expected, expected)
    # the environment wins over both
    monkeypatch.setenv("PHLO_WORKSPACE", "/srv/env.yaml")
    assert both() == (Path("/srv/env.yaml"),) * 2


def test_services_env_of_the_home_the_environment_names(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services_env(folder / "env-home", "PHLO_WORKSPACE=/srv/env-home.yaml\n")
    services_env(folder / ".phlo", "PHLO_WORKSPACE=/srv/default-home.yaml\n")
    (folder / ".env").write_text("PHLO_HOME=dotenv-home\n")
    monkeypatch.setenv("PHLO_HOME", "env-home")
    assert both() == (Path("/srv/env-home.yaml"),) * 2
    monkeypatch.delenv("PHLO_HOME")
    (folder / ".env").unlink()
    assert both() == (Path("/srv/default-home.yaml"),) * 2  # the default home's


def test_a_name_without_a_value_in_a_later_file_unsets_it_as_for_the_settings(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder / ".env").write_text("PHLO_WORKSPACE=/srv/a.yaml\nphlo_workspace\n")
    assert both() == (DEFAULT_WORKSPACE, DEFAULT_WORKSPACE)
    services_env(folder / ".phlo", "PHLO_WORKSPACE=/srv/b.yaml\n")
    (folder / ".env").write_text("PHLO_WORKSPACE\n")
    assert both() == (DEFAULT_WORKSPACE, DEFAULT_WORKSPACE)
    services_env(folder / "h", "PHLO_WORKSPACE=/srv/h.yaml\n")
    (folder / ".env").write_text("PHLO_HOME=h\nPhlo_Home\n")  # the default home's, then
    assert both() == (Path("/srv/b.yaml"),) * 2


def test_blank_values_are_read_as_the_settings_read_them(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services_env(folder / ".phlo", "PHLO_WORKSPACE=/srv/default-home.yaml\n")
    monkeypatch.setenv("PHLO_HOME", "")  # the current folder: no services.env there
    assert both() == (DEFAULT_WORKSPACE, DEFAULT_WORKSPACE)
    monkeypatch.setenv("PHLO_WORKSPACE", "")
    client, settings = both()
    assert client == settings


def test_the_clients_key_loads_no_pydantic() -> None:
    import subprocess

    code = (
        "import sys; from phlo_cli.server import server_key; "
        "server_key(); print(sorted(m for m in sys.modules if 'pydantic' in m))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
