"""Render docs/configuration.md from the settings class, so the reference cannot drift from the code."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand
from pydantic.fields import FieldInfo

from sam3site.config import BASE_DIR, Config

REFERENCE_PATH = BASE_DIR / "docs" / "configuration.md"

HEADER = """# Configuration reference

Generated from `sam3site/config.py` by `python manage.py config_reference`; do not edit by hand.

Every variable is read from the environment or from a `.env` file in the working directory
(environment wins), case-insensitively. Values are validated at start-up: a bad value stops the
process with a message naming the variable. Booleans accept `true/false`, `1/0`, `yes/no`, `on/off`;
lists are JSON, e.g. `VIDEO_GPU_LIST=[0,1]`, `CORS_ORIGINS_LIST=["https://app.example.com"]`.

| Variable | Type | Default | Meaning |
|---|---|---|---|
"""


def _type_name(field: FieldInfo) -> str:
    annotation = field.annotation
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("pathlib.", "").replace("| None", "(optional)")


def _default(name: str, field: FieldInfo) -> str:
    value = field.default
    if value is None:
        return "(unset)"
    if isinstance(value, Path):
        try:
            return f"`{value.relative_to(BASE_DIR)}` (in the project)"
        except ValueError:
            return f"`{value}`"
    if isinstance(value, list):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def render_reference() -> str:
    rows = [
        f"| `{name.upper()}` | {_type_name(field)} | {_default(name, field)} | {field.description} |"
        for name, field in Config.model_fields.items()
    ]
    return HEADER + "\n".join(rows) + "\n"


class Command(BaseCommand):
    help = "Write docs/configuration.md from the settings class (or --check that it is current)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--check", action="store_true", help="Exit 1 if the file is out of date.")

    def handle(self, *args: Any, **options: Any) -> None:
        rendered = render_reference()
        if options["check"]:
            if not REFERENCE_PATH.exists() or REFERENCE_PATH.read_text() != rendered:
                self.stderr.write("docs/configuration.md is out of date: run `python manage.py config_reference`.")
                raise SystemExit(1)
            return
        REFERENCE_PATH.parent.mkdir(exist_ok=True)
        REFERENCE_PATH.write_text(rendered)
        self.stdout.write(f"Wrote {REFERENCE_PATH}")
