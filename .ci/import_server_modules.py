"""Import every module of the server: web and worker side, management commands and migrations.

Run with the runtime environment's Python from the repository root (.ci/run does, in the copy
that has requirements.txt alone installed): an import that only a development package satisfies
fails here, not on a user's machine. The server's packages are import-linter's root packages
(pyproject.toml), the one list of them.
"""

from __future__ import annotations

import importlib
import os
import sys
import tomllib
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def server_modules() -> list[str]:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
    modules = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def main() -> int:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sam3site.settings")
    import django

    django.setup()
    modules = server_modules()
    failed = 0
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - every failure is reported, not only the first
            failed += 1
            print(f"FAILED {name}:\n{traceback.format_exc()}", file=sys.stderr)
    print(f"imported {len(modules) - failed} of {len(modules)} server modules")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
