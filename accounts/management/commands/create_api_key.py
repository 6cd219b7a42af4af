from __future__ import annotations

import datetime as dt
from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a user (creating the user if needed); prints the key once on stdout."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--user", required=True, help="Username; created if it does not exist.")
        parser.add_argument("--name", default="default", help="What the key is for.")
        parser.add_argument("--expires-in-days", type=int, default=None, help="Expiry; default never.")
        parser.add_argument("--staff", action="store_true", help="Make the user staff (manages users and keys).")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["expires_in_days"]
        if days is not None and days <= 0:
            raise CommandError("--expires-in-days must be positive")
        user, created = get_user_model().objects.get_or_create(username=options["user"])
        if created:
            user.set_unusable_password()
        if options["staff"]:
            user.is_staff = True
        user.save()
        expires_at = timezone.now() + dt.timedelta(days=days) if days else None
        api_key, full_key = api_key_create(user=user, name=options["name"], expires_at=expires_at)
        self.stderr.write(
            f"{'Created user' if created else 'User'} {user.username}; key {api_key.prefix} "
            f"({api_key.name}), {'expires ' + expires_at.isoformat() if expires_at else 'no expiry'}. "
            "Store the key now: it is not shown again."
        )
        self.stdout.write(full_key)
