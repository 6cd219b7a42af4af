"""Reads about users, keys and usage. Usage is what Postgres holds plus what Redis holds and has
not flushed yet (accounts.usage)."""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db.models import QuerySet, Sum

from accounts.cache import cached
from accounts.models import ApiKey, DailyUsage

RECENT_ROWS_PER_DAY = 10


def usage_stored_on(*, user_id: int, day: dt.date) -> int:
    return DailyUsage.objects.filter(user_id=user_id, day=day).aggregate(total=Sum("requests"))["total"] or 0


@dataclass(frozen=True)
class UsageOverview:
    requests_today: int
    recent: list[DailyUsage]  # newest day first; today's rows include the pending counts


def usage_overview(*, user: User, today: dt.date, days: int = 7) -> UsageOverview:
    """Today's total and the recent rows per day and key, stored and pending together. What Postgres
    holds is read once per flush generation (accounts.usage), so this is one Redis round trip."""
    from accounts.usage import stored_requests, usage_state

    generation, pending = usage_state(user_id=user.pk, day=today)
    limit = days * RECENT_ROWS_PER_DAY

    def stored_rows() -> list[DailyUsage]:
        return list(DailyUsage.objects.filter(user_id=user.pk).select_related("api_key").order_by("-day", "pk")[:limit])

    rows = stored_rows() if generation is None else cached("usage-rows", (user.pk, today, generation), stored_rows)
    if len(rows) < limit or rows[-1].day != today:  # every stored row of today is in ``rows``
        stored_today = sum(row.requests for row in rows if row.day == today)
    else:
        stored_today = stored_requests(user_id=user.pk, day=today, generation=generation)
    return UsageOverview(requests_today=stored_today + sum(pending.values()), recent=_with_pending(user, today, rows, pending))


def _with_pending(
    user: User, today: dt.date, rows: list[DailyUsage], pending: dict[int | None, int]
) -> list[DailyUsage]:
    """``rows`` (shared, left untouched) with today's pending counts added per key."""
    if not pending:
        return rows
    merged = list(rows)
    positions = {row.api_key_id: index for index, row in enumerate(merged) if row.day == today}
    missing = tuple(sorted(key_id for key_id in pending if key_id is not None and key_id not in positions))
    keys = cached("api-keys-by-id", missing, lambda: ApiKey.objects.in_bulk(missing)) if missing else {}
    added: dict[int | None, DailyUsage] = {}
    for key_id, requests in pending.items():
        if key_id is not None and key_id not in positions and key_id not in keys:
            key_id = None  # the key was deleted meanwhile: its requests stay the user's
        if key_id in positions:
            row = merged[positions[key_id]] = copy.copy(merged[positions[key_id]])
        elif key_id in added:
            row = added[key_id]
        else:
            api_key = keys.get(key_id) if key_id is not None else None
            row = added[key_id] = DailyUsage(user=user, api_key=api_key, day=today, requests=0)
        row.requests += requests
    return [*added.values(), *merged]


def api_keys_visible_to(*, user: User) -> QuerySet[ApiKey]:
    keys = ApiKey.objects.select_related("user")
    return keys if user.is_staff else keys.filter(user=user)
