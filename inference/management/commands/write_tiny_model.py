from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand

from inference.runtime.tiny import write_tiny_checkpoint


class Command(BaseCommand):
    help = (
        "Write the tiny random-weight SAM3 (same architecture, ~2 M parameters) in the Hugging Face layout. "
        "For smoke tests and CI only: its masks are meaningless."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        path = write_tiny_checkpoint(options["directory"], seed=options["seed"])
        self.stdout.write(f"Wrote the tiny random SAM3 to {path}; point SAM3_CHECKPOINT at it.")
