"""Per-client rate (counters in the shared cache, i.e. Redis) and daily quota (accounts.usage).

DRF's throttle contract: ``allow_request`` says no and ``wait()`` says for how long; DRF raises
``Throttled``, answered as our 429 with Retry-After (sam3site.errors, which uses the reason this
throttle leaves in ``request.throttle_refusal``: the rate or the daily quota, each with its code).

Anonymous requests are counted against their address during authentication
(accounts.authentication), before the permission check can refuse them with 401: refused calls
count too, and every request is counted once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django_ratelimit.core import get_usage
from rest_framework.throttling import BaseThrottle

from accounts.services import quota_of_request, usage_record_request
from sam3site.errors import RateLimited

if TYPE_CHECKING:
    from rest_framework.request import Request
    from rest_framework.views import APIView

ADDRESS_COUNTED = "rate_counted"  # request attribute: this request was counted against its address already


def rate_refusal(request: Any, identity: str, per_minute: int) -> RateLimited | None:
    """Count one request of ``identity``; the refusal when it is over ``per_minute``."""
    usage = get_usage(
        request, group="api", key=lambda _group, _request: identity, rate=f"{per_minute}/m", increment=True
    )
    if usage and usage["should_limit"]:
        return RateLimited(
            f"Rate limit of {per_minute} requests per minute exceeded.", retry_after=max(1, int(usage["time_left"]))
        )
    return None


def count_anonymous(request: Request) -> RateLimited | None:
    """Count an unidentified request against its address (once); the refusal when over the rate."""
    http_request = request._request
    if not settings.RATE_LIMIT_ENABLED or getattr(http_request, ADDRESS_COUNTED, False):
        return None
    setattr(http_request, ADDRESS_COUNTED, True)
    address = http_request.META.get("REMOTE_ADDR", "unknown")
    refusal = rate_refusal(http_request, f"ip:{address}", settings.RATE_LIMIT_REQUESTS_PER_MINUTE)
    if refusal is not None:
        http_request.throttle_refusal = refusal  # type: ignore[attr-defined]  # per-request attribute, read by sam3site.errors
    return refusal


class RateAndQuotaThrottle(BaseThrottle):
    def __init__(self) -> None:
        self.refusal: RateLimited | None = None

    def allow_request(self, request: Request, view: APIView) -> bool:
        user = request.user if request.user and request.user.is_authenticated else None
        if user is None:
            self.refusal = count_anonymous(request)  # no-op when authentication counted it already
        else:
            self.refusal = self._refusal_of(request, user)
        if self.refusal is not None:
            request._request.throttle_refusal = self.refusal  # type: ignore[attr-defined]  # as in count_anonymous
            return False
        return True

    def wait(self) -> float | None:
        return float(self.refusal.retry_after) if self.refusal and self.refusal.retry_after else None

    @staticmethod
    def _refusal_of(request: Request, user: Any) -> RateLimited | None:
        quota = quota_of_request(request)
        if settings.RATE_LIMIT_ENABLED:
            refusal = rate_refusal(request._request, f"user:{user.pk}", quota.requests_per_minute)
            if refusal is not None:
                return refusal
        identity = request.auth if hasattr(request.auth, "api_key") else None
        try:
            usage_record_request(
                user=user, api_key=identity.api_key if identity else None, daily_limit=quota.daily_requests
            )
        except RateLimited as refusal:
            return refusal
        return None
