#!/usr/bin/env bash
# Creates ./.venv (unless it exists) and installs timm-camc into it, editable, with the test extra.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
.venv/bin/python -c "import timm, timm_camc; print('timm', timm.__version__, '| CAMC models:', timm.list_models('*camc*'))"
