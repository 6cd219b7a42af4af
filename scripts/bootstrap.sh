#!/usr/bin/env bash
# Creates .venv and installs the requirements when they changed since the last install.
# Usage: source scripts/bootstrap.sh [requirements file]   (default: requirements.txt)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
requirements="${1:-requirements.txt}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.installed-$(cat requirements*.txt | sha256sum | cut -c1-16)-$(basename "$requirements")"
if [ ! -f "$stamp" ]; then
  echo "Installing $requirements into .venv (torch is large: the first run takes a few minutes)..."
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$requirements" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import django, torch, transformers, daphne, celery" # fail loudly if the install did not
  touch "$stamp"
fi
