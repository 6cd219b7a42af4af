#!/usr/bin/env bash
# Regenerates constraints.txt, the lock of every package (runtime and test) at an exact version,
# with pip-tools' pip-compile from requirements-dev.txt (which includes requirements.txt); and
# tests/labelstudio/constraints.txt, the lock of the Label Studio the tests start (its own venv).
# Usage: bash scripts/lock.sh                                 keep versions, add what is new
#        bash scripts/lock.sh --upgrade                       newest allowed versions of everything
#        bash scripts/lock.sh --upgrade-package transformers  one package
set -euo pipefail
cd "$(dirname "$0")/.."
tools="${TMPDIR:-/tmp}/sam3-pip-tools"
[ -x "$tools/bin/pip-compile" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q pip-tools; }
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" "$tools/bin/pip-compile" --quiet --strip-extras --allow-unsafe \
  --annotation-style line --no-emit-index-url --no-emit-find-links --output-file constraints.txt "$@" requirements-dev.txt
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" "$tools/bin/pip-compile" --quiet --strip-extras --allow-unsafe \
  --annotation-style line --no-emit-index-url --no-emit-find-links --output-file tests/labelstudio/constraints.txt "$@" \
  tests/labelstudio/requirements.txt
