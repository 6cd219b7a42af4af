"""Writes and checks for API keys, quotas and usage."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, User
from django.utils import timezone

from accounts import usage
from accounts.cache import cached, forget_all
from accounts.models import ApiKey, Quota
from sam3site.errors import ApiError, RateLimited

KEY_PREFIX_LENGTH = 8
LAST_USED_GRANULARITY = dt.timedelta(seconds=60)  # avoid a write on every request


class InvalidApiKey(ApiError):
    status_code, code, message = 401, "invalid_api_key", "The API key is not valid."


@dataclass(frozen=True)
class KeyIdentity:
    """Who a presented key belongs to. ``api_key`` is None for keys from API_KEYS."""

    user: User
    api_key: ApiKey | None
    label: str  # safe to log: the public prefix


def _digest(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_issue(api_key: ApiKey) -> str:
    """Give an unsaved key its prefix and hash, save it, and return the full key (shown once, never stored)."""
    while True:
        prefix = secrets.token_hex(KEY_PREFIX_LENGTH // 2)
        if not ApiKey.objects.filter(prefix=prefix).exists():
            break
    full_key = f"{prefix}.{secrets.token_urlsafe(32)}"
    api_key.prefix, api_key.hashed_key = prefix, _digest(full_key)
    api_key.save()
    return full_key


def api_key_create(*, user: User, name: str, expires_at: dt.datetime | None = None) -> tuple[ApiKey, str]:
    api_key = ApiKey(user=user, name=name, expires_at=expires_at)
    return api_key, api_key_issue(api_key)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke for good. This process refuses the key at once, every other one within
    IDENTITY_TTL_SECONDS (accounts.cache)."""
    api_key.revoked = True
    api_key.save(update_fields=["revoked"])  # post_save clears this process's cache
    return api_key


def api_keys_revoke(*, keys: Any) -> int:
    """Revoke a queryset of keys (the admin action); as :func:`api_key_revoke`."""
    revoked = keys.update(revoked=True)
    forget_all()  # update() sends no signals
    return revoked


def _static_key_user(raw_key: str) -> User:
    """Each key from API_KEYS acts as its own user, so env-key clients never see each other's objects."""
    username = f"envkey-{_digest(raw_key)[:12]}"

    def load() -> User:
        user, created = get_user_model().objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        return user

    return copy.copy(cached("static-key-user", username, load))


def _key_by_prefix(prefix: str) -> ApiKey | None:
    """The key row with its user, from this process's cache (at most IDENTITY_TTL_SECONDS old).
    Unknown prefixes are not cached: a key made a moment ago elsewhere must work at once."""
    return cached(
        "api-key", prefix, lambda: ApiKey.objects.select_related("user").filter(prefix=prefix).first(), keep_none=False
    )


def api_key_authenticate(raw_key: str) -> KeyIdentity:
    """Resolve a presented key. Raises :class:`InvalidApiKey` (never echoing the key)."""
    for static_key in settings.STATIC_API_KEYS:
        if hmac.compare_digest(raw_key.encode(), static_key.encode()):
            user = _static_key_user(raw_key)
            if not user.is_active:  # an operator deactivated the key's user in the admin: off without a restart
                raise InvalidApiKey("The key's user is deactivated.", code="user_inactive")
            return KeyIdentity(user=user, api_key=None, label=f"env:{_digest(raw_key)[:8]}")

    prefix, dot, _secret = raw_key.partition(".")
    api_key = _key_by_prefix(prefix) if dot else None
    if api_key is None or not hmac.compare_digest(api_key.hashed_key, _digest(raw_key)):
        raise InvalidApiKey()
    if api_key.revoked:
        raise InvalidApiKey("The API key has been revoked.", code="api_key_revoked")
    if api_key.is_expired:
        raise InvalidApiKey("The API key has expired.", code="api_key_expired")
    if not api_key.user.is_active:
        raise InvalidApiKey("The key's user is deactivated.", code="user_inactive")
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_GRANULARITY:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now  # the cached row: this process writes again in a minute at the earliest
    # Copies: the cached rows are shared by concurrent requests.
    return KeyIdentity(user=copy.copy(api_key.user), api_key=copy.copy(api_key), label=api_key.prefix)


@dataclass(frozen=True)
class EffectiveQuota:
    requests_per_minute: int
    daily_requests: int | None
    max_concurrent_sessions: int
    max_upload_bytes: int


def quota_for(user: AbstractBaseUser | None) -> EffectiveQuota:
    quota = None
    if user is not None and user.is_authenticated:
        quota = cached("quota", user.pk, lambda: Quota.objects.filter(user_id=user.pk).first())
    upload_mb = settings.MAX_UPLOAD_BYTES // (1024 * 1024)
    if quota and quota.max_upload_mb:
        upload_mb = min(upload_mb, quota.max_upload_mb)
    return EffectiveQuota(
        requests_per_minute=(quota and quota.requests_per_minute) or settings.RATE_LIMIT_REQUESTS_PER_MINUTE,
        daily_requests=quota.daily_requests if quota else None,
        max_concurrent_sessions=(quota and quota.max_concurrent_sessions) or settings.CONFIG.max_concurrent_sessions,
        max_upload_bytes=upload_mb * 1024 * 1024,
    )


def quota_of_request(request: Any) -> EffectiveQuota:
    """The caller's quota, looked up once per request (throttling and upload limits both need it)."""
    http_request = getattr(request, "_request", request)
    if not hasattr(http_request, "effective_quota"):
        user = request.user if request.user and request.user.is_authenticated else None
        http_request.effective_quota = quota_for(user)
    return http_request.effective_quota


def _seconds_until_utc_midnight(now: dt.datetime) -> int:
    tomorrow = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((tomorrow - now).total_seconds()))


def usage_record_request(*, user: AbstractBaseUser, api_key: ApiKey | None, daily_limit: int | None) -> None:
    """Count one request for today (accounts.usage: Redis, flushed to Postgres in batches), refusing
    it with 429 once the daily quota is spent."""
    now = timezone.now()
    counted = usage.count_request(
        user_id=user.pk, api_key_id=api_key.pk if api_key else None, day=now.date(), daily_limit=daily_limit
    )
    if not counted:
        raise RateLimited(
            f"The daily quota of {daily_limit} requests is used up; it resets at 00:00 UTC.",
            code="daily_quota_exceeded",
            retry_after=_seconds_until_utc_midnight(now),
        )
