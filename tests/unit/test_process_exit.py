from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import atexit, sys
    from phlo_core.process_exit import exit_code, exit_now

    atexit.register(lambda: open(sys.argv[1], "w").write("exit handler ran"))
    sys.stdout.write("buffered, no newline")
    sys.stderr.write("on stderr")
    try:
        raise SystemExit(int(sys.argv[2]) if sys.argv[2].isdigit() else sys.argv[2])
    except SystemExit as exc:
        exit_now(exit_code(exc))
    """
)


def _run(tmp_path: Path, code: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    marker = tmp_path / f"marker-{code}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src" / "python")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(marker), code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return done, marker


def test_exit_now_runs_exit_handlers_flushes_output_and_keeps_the_code(tmp_path: Path) -> None:
    """A process ended without its interpreter's teardown still says everything it wrote, runs
    what was registered to run at exit, and exits with the status asked for."""
    for code, expected in (("0", 0), ("3", 3), ("a message", 1)):
        done, marker = _run(tmp_path, code)
        assert done.returncode == expected, done.stderr
        assert done.stdout == "buffered, no newline"
        assert done.stderr.startswith("on stderr")
        assert marker.read_text() == "exit handler ran"
    assert done.stderr == "on stderra message\n"  # as Python prints a SystemExit's message
