"""Convert Meta's sam3.pt into the Hugging Face layout the server loads (offline, e.g. when building an image)."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from inference.runtime.checkpoints import DEFAULT_SHARD_BYTES, CheckpointError, convert_meta_checkpoint


class Command(BaseCommand):
    help = (
        "Convert Meta's SAM 3 checkpoint (sam3.pt) into a new Hugging Face-layout directory (config.json,"
        " safetensors shards, processor settings). Point SAM3_CHECKPOINT at the result. The server does the"
        " same by itself (once, cached under DATA_DIR) when SAM3_CHECKPOINT names a sam3.pt."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("source", type=Path, help="Meta's checkpoint, e.g. sam3.pt")
        parser.add_argument("destination", type=Path, help="directory to create (must not exist)")
        parser.add_argument(
            "--shard-size-mb", type=int, default=DEFAULT_SHARD_BYTES >> 20,
            help="largest safetensors file written; also bounds the memory the conversion needs (default %(default)s)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        source: Path = options["source"]
        if not source.is_file():
            raise CommandError(f"{source} does not exist or is not a file")
        if options["shard_size_mb"] < 1:
            raise CommandError("--shard-size-mb must be at least 1")
        try:
            result = convert_meta_checkpoint(source, options["destination"], shard_bytes=options["shard_size_mb"] << 20)
        except CheckpointError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"Converted {source} (sha256 {result.sha256}) into {result.directory}: {result.tensors} tensors,"
            f" {len(result.dropped)} dropped (recomputed or unused by transformers)."
        )
