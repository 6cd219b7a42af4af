"""Expire idle video sessions and delete the results of ended ones; for cron. Idempotent.

Model workers sweep every SESSION_CLEANUP_INTERVAL_SECONDS themselves (and free the memory of
sessions that ended); this command does the database and file part when run from cron.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from sessions.events import flush as flush_events
from sessions.services import sessions_sweep


class Command(BaseCommand):
    help = "Expire sessions idle for SESSION_TIMEOUT_SECONDS and remove the files of closed/expired/failed ones."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Only list what would be done.")

    def handle(self, *args: Any, **options: Any) -> None:
        outcome = sessions_sweep(dry_run=options["dry_run"])
        flush_events()  # expiries are told to connected websockets before this process exits
        prefix = "Would expire" if options["dry_run"] else "Expired"
        self.stdout.write(f"{prefix} {len(outcome['expired'])} idle session(s): {' '.join(outcome['expired']) or '-'}")
        prefix = "Would remove" if options["dry_run"] else "Removed"
        self.stdout.write(f"{prefix} files of {len(outcome['cleaned'])} ended session(s): {' '.join(outcome['cleaned']) or '-'}")
