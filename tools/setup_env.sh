#!/usr/bin/env bash
# Create or update the project's environment in .venv/ (the one set-up path: README, Makefile, CI).
#
#   1. .venv with Python 3.11 (override with PYTHON=/path/to/python3.x);
#   2. torch 2.14.1 + torchvision 0.29.1;
#   3. Detectron2: a compiled or foreign one is kept, else the project's patched pure-Python
#      build of the pb1-detectron2==0.6 sdist is installed or updated (tools/build_detectron2.py);
#   4. this package, editable, with its test extras;
#   5. the deformable-attention extension's CPU build from ops/ (CUDA too with FORCE_CUDA=1).
# Every install honours constraints.txt, so two set-ups give the same environment. When none of
# the inputs changed since the last successful run, it only checks that the package imports.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.avsegformer-setup-stamp
CONSTRAINTS=constraints.txt

fingerprint() {
    {
        cat "$CONSTRAINTS" pyproject.toml setup.py tools/setup_env.sh tools/build_detectron2.py
        find ops -type f \( -name '*.py' -o -name '*.h' -o -name '*.cpp' -o -name '*.cu' \) \
            -not -path 'ops/build/*' | LC_ALL=C sort | xargs cat
        echo "FORCE_CUDA=${FORCE_CUDA:-0}"
    } | sha256sum | cut -d' ' -f1
}

want=$(fingerprint)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
    && "$VENV/bin/python" -c "import avsegformer" 2>/dev/null; then
    echo "setup: $VENV is up to date"
    exit 0
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    command -v "$PYTHON" >/dev/null || {
        echo "setup: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python" >&2
        exit 1
    }
    echo "setup: creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

"${PIP[@]}" install -c "$CONSTRAINTS" torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" tools/build_detectron2.py --constraint "$CONSTRAINTS"
"${PIP[@]}" install -c "$CONSTRAINTS" --no-build-isolation -e ".[test]"
"${PIP[@]}" install -c "$CONSTRAINTS" --no-build-isolation ./ops
"${PIP[@]}" check

echo "$want" >"$STAMP"
echo "setup: done in $(($(date +%s) - start)) s"
