#!/usr/bin/env bash
# Creates .venv and installs the requirements, at the exact versions of constraints.txt (the lock
# made by scripts/lock.sh), when they changed since the last install. The one install path of the
# project: scripts/serve.sh, the Dockerfile and .ci/run all go through it.
# Usage: source scripts/bootstrap.sh [requirements file]   (default: requirements.txt)
#        bash scripts/bootstrap.sh [requirements file]
# A failed install stops here with pip's own message and leaves no stamp, so the next run installs again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
requirements="${1:-requirements.txt}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
lock_hash="$(cat requirements*.txt constraints.txt | sha256sum | cut -c1-16)"
stamp=".venv/.installed-$lock_hash-$(basename "$requirements")"
dev_stamp=".venv/.installed-$lock_hash-requirements-dev.txt"  # the dev set includes the runtime one

pip_install() {
  local log status=0
  log="$(mktemp)"
  .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    cat "$log" >&2
    rm -f "$log"
    echo "bootstrap: 'pip install $*' failed (exit $status); .venv is not marked installed." >&2
    return "$status"
  fi
  grep -v "^WARNING: Location" "$log" || true  # pip's notes about its config locations are noise here
  rm -f "$log"
}

if [ ! -f "$stamp" ] && [ ! -f "$dev_stamp" ]; then
  echo "Installing $requirements into .venv (torch is large: the first run takes a few minutes)..."
  rm -f .venv/.installed-*
  pip_install --upgrade pip
  pip_install -r "$requirements" -c constraints.txt
  .venv/bin/python -c "import django, torch, transformers, daphne, celery"  # a sanity check of what pip reported
  touch "$stamp"
fi
