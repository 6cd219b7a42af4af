#!/usr/bin/env bash
# Quick start: install what is needed and serve on the embedded default (SQLite, in-process
# everything) unless DATABASE_URL / REDIS_URL are set. Settings come from the environment or .env.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh requirements.txt
# The contract's default device is cuda:0; on a machine without an NVIDIA GPU run on the CPU.
if [ -z "${IMAGE_MODEL_DEVICE:-}" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
  export IMAGE_MODEL_DEVICE=cpu
  echo "No NVIDIA GPU found: IMAGE_MODEL_DEVICE=cpu"
fi
exec .venv/bin/python manage.py serve "$@"
