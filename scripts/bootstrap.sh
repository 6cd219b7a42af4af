#!/usr/bin/env bash
# Creates .venv and installs the requirements, at the exact versions of constraints.txt (the lock
# made by scripts/lock.sh), when they changed since the last install.
# Usage: source scripts/bootstrap.sh [requirements file]   (default: requirements.txt)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
requirements="${1:-requirements.txt}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
lock_hash="$(cat requirements*.txt constraints.txt | sha256sum | cut -c1-16)"
stamp=".venv/.installed-$lock_hash-$(basename "$requirements")"
dev_stamp=".venv/.installed-$lock_hash-requirements-dev.txt"  # the dev set includes the runtime one
if [ ! -f "$stamp" ] && [ ! -f "$dev_stamp" ]; then
  echo "Installing $requirements into .venv (torch is large: the first run takes a few minutes)..."
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$requirements" -c constraints.txt 2>&1 \
    | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import django, torch, transformers, daphne, celery" # fail loudly if the install did not
  touch "$stamp"
fi
