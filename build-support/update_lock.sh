#!/usr/bin/env bash
# Regenerates Pants' lock from uv's lists: run after changing pyproject.toml and `uv lock`.
# Writes 3rdparty/python/{dev-requirements.txt,constraints.txt} then 3rdparty/python/phlo.lock,
# and checks that all agree.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" build-support/pants_lock.py write
./pants generate-lockfiles --resolve=phlo
"$PY" build-support/pants_lock.py check
