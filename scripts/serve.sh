#!/usr/bin/env bash
# Quick start: install what is needed and serve on the embedded default (SQLite, in-process
# everything) unless DATABASE_URL / REDIS_URL are set. Settings come from the environment or .env.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh requirements.txt
exec .venv/bin/python manage.py serve "$@"
