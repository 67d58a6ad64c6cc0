"""A dbt project made ready to run: profile written, shared package linked, manifest parsed.

Safe from several processes at once (a lock per home), and a kill midway leaves the previous
manifest whole.
"""

import json
import os
import shutil
from contextlib import suppress
from pathlib import Path

from phlo_core.dbt.profile import write_profile
from phlo_core.dbt.runner import invoke_dbt, remember_manifest, target_path
from phlo_core.lakehouse.extensions import ensure_extensions
from phlo_core.lakehouse.locks import file_lock
from phlo_core.settings import PhloSettings
from phlo_core.workspace import DBT_ROOT

SHARED_PACKAGE = DBT_ROOT / "packages" / "phlo_shared"
PARTIAL_PARSE = "partial_parse.msgpack"  # dbt's saved parse state
_prepared: list[Path] = []  # projects prepared in this process, in order
# Manifests read whole in this process (path, inode, size, mtime): each of a run's dbt steps
# checks its manifest, and reading it again cost 0.1 s a step. A parse replaces the file.
_whole: set[tuple[str, int, int, int]] = set()


def _newest_source_mtime(*folders: Path) -> float:
    newest = 0.0
    for folder in folders:
        for path in folder.rglob("*"):
            if path.suffix in (".sql", ".yml", ".yaml") and "dbt_packages" not in path.parts:
                newest = max(newest, path.stat().st_mtime)
    return newest


def _link_shared_package(project_dir: Path) -> None:
    """Install the local `phlo_shared` package as `dbt deps` does for a local package (a
    symlink in dbt_packages/), but atomically, so that concurrent first runs cannot collide."""
    link = project_dir / "dbt_packages" / SHARED_PACKAGE.name
    if link.exists():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.{os.getpid()}")
    with suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(os.path.relpath(SHARED_PACKAGE, link.parent), target_is_directory=True)
    os.replace(temporary, link)


def _manifest_is_current(manifest: Path, project_dir: Path) -> bool:
    """The manifest exists, is whole JSON (a kill while writing leaves neither behind, but
    older versions could) and is newer than every model, macro and YAML file."""
    try:
        stat = manifest.stat()
        if stat.st_mtime < _newest_source_mtime(project_dir, SHARED_PACKAGE):
            return False
        identity = (str(manifest), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if identity not in _whole:
            json.loads(manifest.read_text())
            _whole.add(identity)
    except (OSError, ValueError):
        return False
    return True


def project_manifest(project_dir: Path, settings: PhloSettings) -> Path:
    """The project's manifest, for its definitions: the shared package linked, and the project
    parsed when a model, macro or YAML file is newer than the manifest (then the profile is
    written for the parse, which needs no secret and connects to nothing). What the manifest
    holds is the same for any settings; the settings' home only keeps it (beside dbt's saved
    parse state, which later parses reuse). Safe from several processes at once (a lock per
    home), and a kill midway leaves the previous manifest whole: dbt parses into a private
    folder and the manifest is then moved into place in one rename."""
    target = target_path(project_dir, settings)
    manifest = target / "manifest.json"
    with file_lock(settings.dbt_dir / ".prepare.lock"):
        _link_shared_package(project_dir)
        if not _manifest_is_current(manifest, project_dir):
            write_profile(settings)
            scratch = target / f".parse-{os.getpid()}"
            try:
                parsed = invoke_dbt(["parse", "--target-path", str(scratch)], project_dir, settings)
                # dbt's saved parse state too: without it every process parses the project
                # in full (about 2 s) instead of checking it unchanged (under 0.1 s).
                with suppress(FileNotFoundError):
                    os.replace(scratch / PARTIAL_PARSE, target / PARTIAL_PARSE)
                os.replace(scratch / "manifest.json", manifest)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            remember_manifest(project_dir, settings, parsed.result)
    if project_dir not in _prepared:
        _prepared.append(project_dir)
    return manifest


def prepare_project(project_dir: Path, settings: PhloSettings) -> Path:
    """Ready for dbt commands on the settings' lakehouse (what a run's dbt resource does first):
    the profile written for the settings, the extensions in the home, the manifest current.
    Returns the manifest path."""
    with file_lock(settings.dbt_dir / ".prepare.lock"):
        write_profile(settings)
        ensure_extensions(settings)  # dbt's connection autoloads them from PHLO_HOME
        return project_manifest(project_dir, settings)


def prepared_projects() -> list[Path]:
    """The dbt projects this process has prepared (those of the locations it loaded)."""
    return list(_prepared)
