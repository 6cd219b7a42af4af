"""Per-client rate (counters in the shared cache, i.e. Redis) and daily quota (counted in the database)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django_ratelimit.core import get_usage
from rest_framework.throttling import BaseThrottle

from accounts.services import quota_of_request, usage_record_request
from sam3site.errors import RateLimited

if TYPE_CHECKING:
    from rest_framework.request import Request
    from rest_framework.views import APIView


def client_identity(request: Request) -> str:
    user = request.user
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{request.META.get('REMOTE_ADDR', 'unknown')}"


class RateAndQuotaThrottle(BaseThrottle):
    def allow_request(self, request: Request, view: APIView) -> bool:
        user = request.user if request.user and request.user.is_authenticated else None
        quota = quota_of_request(request)
        if settings.RATE_LIMIT_ENABLED:
            identity = client_identity(request)
            usage = get_usage(
                request,
                group="api",
                key=lambda _group, _request: identity,
                rate=f"{quota.requests_per_minute}/m",
                increment=True,
            )
            if usage and usage["should_limit"]:
                raise RateLimited(
                    f"Rate limit of {quota.requests_per_minute} requests per minute exceeded.",
                    retry_after=max(1, int(usage["time_left"])),
                )
        if user is not None:
            identity_auth = request.auth if hasattr(request.auth, "api_key") else None
            usage_record_request(
                user=user, api_key=identity_auth.api_key if identity_auth else None, daily_limit=quota.daily_requests
            )
        return True
