"""Reads about users, keys and usage."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet, Sum

from accounts.models import ApiKey, DailyUsage


def usage_requests_on(*, user: AbstractBaseUser, day: dt.date) -> int:
    return DailyUsage.objects.filter(user=user, day=day).aggregate(total=Sum("requests"))["total"] or 0


def usage_recent(*, user: AbstractBaseUser, days: int = 7) -> QuerySet[DailyUsage]:
    return DailyUsage.objects.filter(user=user).select_related("api_key").order_by("-day")[: days * 10]


def api_keys_visible_to(*, user: AbstractBaseUser) -> QuerySet[ApiKey]:
    keys = ApiKey.objects.select_related("user")
    return keys if user.is_staff else keys.filter(user=user)
