#!/usr/bin/env bash
# Create (or update) the venv for benchmark peer (a), sse-starlette on uvicorn, at
# <repo>/.bench/starlette-venv and install requirements-starlette.txt into it.
# Idempotent: an existing venv is reused; pip leaves satisfied pins alone.
#
#   bash scripts/peers/setup_starlette.sh
#
# Then run the peer from the repository root:
#   .bench/starlette-venv/bin/uvicorn --app-dir scripts/peers starlette_app:app \
#       --host 127.0.0.1 --port P --workers 1 --log-level warning --no-access-log
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=$root/.bench/starlette-venv
python=${PYTHON:-python3}

if [[ ! -x $venv/bin/python ]]; then
    mkdir -p "$root/.bench"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements-starlette.txt"
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in ("sse-starlette", "starlette", "uvicorn", "uvloop", "httptools", "orjson")))
PY
"$venv/bin/python" -c "import sys; sys.path.insert(0, '$here'); import starlette_app" \
    || { echo "setup_starlette: starlette_app does not import" >&2; exit 1; }
echo "setup_starlette: ready: $venv"
