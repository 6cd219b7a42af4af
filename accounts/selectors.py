"""Reads about users, keys and usage. Usage is what Postgres holds plus what Redis holds and has
not flushed yet (accounts.usage)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet, Sum

from accounts.models import ApiKey, DailyUsage

RECENT_ROWS_PER_DAY = 10


def usage_stored_on(*, user_id: int, day: dt.date) -> int:
    return DailyUsage.objects.filter(user_id=user_id, day=day).aggregate(total=Sum("requests"))["total"] or 0


def usage_requests_on(*, user: AbstractBaseUser, day: dt.date) -> int:
    from accounts.usage import pending_requests

    return usage_stored_on(user_id=user.pk, day=day) + sum(pending_requests(user_id=user.pk, day=day).values())


@dataclass(frozen=True)
class UsageOverview:
    requests_today: int
    recent: list[DailyUsage]  # newest day first; today's rows include the pending counts


def usage_overview(*, user: AbstractBaseUser, today: dt.date, days: int = 7) -> UsageOverview:
    """Today's total and the recent rows per day and key, stored and pending together."""
    from accounts.usage import pending_requests

    limit = days * RECENT_ROWS_PER_DAY
    recent = list(DailyUsage.objects.filter(user=user).select_related("api_key").order_by("-day", "pk")[:limit])
    if len(recent) < limit or recent[-1].day != today:  # every stored row of today is in ``recent``
        stored_today = sum(row.requests for row in recent if row.day == today)
    else:
        stored_today = usage_stored_on(user_id=user.pk, day=today)
    pending = pending_requests(user_id=user.pk, day=today)
    if pending:
        rows_today = {row.api_key_id: row for row in recent if row.day == today}
        missing = [key_id for key_id in pending if key_id not in rows_today]
        keys = ApiKey.objects.in_bulk([key_id for key_id in missing if key_id is not None])
        for key_id, requests in pending.items():
            if key_id is not None and key_id not in rows_today and key_id not in keys:
                key_id = None  # the key was deleted meanwhile: its requests stay the user's
            row = rows_today.get(key_id)
            if row is None:
                api_key = keys.get(key_id) if key_id is not None else None
                row = rows_today[key_id] = DailyUsage(user=user, api_key=api_key, day=today, requests=0)
                recent.insert(0, row)
            row.requests += requests
    return UsageOverview(requests_today=stored_today + sum(pending.values()), recent=recent)


def api_keys_visible_to(*, user: AbstractBaseUser) -> QuerySet[ApiKey]:
    keys = ApiKey.objects.select_related("user")
    return keys if user.is_staff else keys.filter(user=user)
