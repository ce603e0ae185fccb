#!/usr/bin/env bash
# Creates (or reuses) the Python environment for the AutoAttack reference cross-check, outside
# the source tree: $VENV (default /work/venv-torch) with torch, numpy, safetensors and the
# reference AutoAttack from PyPI — package `pyautoattack` 0.2.0, imported as `pyautoattack`
# (not `autoattack`). Usage: [VENV=/path] [PYTHON=python3] tests/reference/setup.sh
set -euo pipefail
VENV="${VENV:-/work/venv-torch}"
PYTHON="${PYTHON:-python3}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV_ABS="$(realpath -m "$VENV")"
case "$VENV_ABS/" in "$REPO"/*) echo "error: VENV ($VENV_ABS) must lie outside the source tree" >&2; exit 1;; esac

[ -x "$VENV_ABS/bin/python" ] || "$PYTHON" -m venv "$VENV_ABS"
PY="$VENV_ABS/bin/python"
for pkg in torch numpy safetensors; do
    "$PY" -c "import $pkg" 2>/dev/null || "$PY" -m pip install -q "$pkg"
done
# The wheel declares no dependencies; it needs only torch (and numpy) at run time.
"$PY" -m pip install -q "pyautoattack==0.2.0"
"$PY" - <<'PY'
import torch, pyautoattack
from pyautoattack import AutoAttack  # noqa: F401
print(f"torch {torch.__version__}, pyautoattack {pyautoattack.__version__} at {pyautoattack.__file__}")
PY
echo "environment ready: $VENV_ABS/bin/python"
