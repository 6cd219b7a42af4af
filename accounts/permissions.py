from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework.permissions import BasePermission

from sam3site.errors import AuthenticationRequired

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from rest_framework.request import Request
    from rest_framework.views import APIView


class ApiKeyPolicy(BasePermission):
    """REQUIRE_API_KEY=True: every API call needs a key. False: anonymous clients are served, as the
    source document says, but only stateless endpoints; stored objects (uploads, sessions) always
    need an identity, otherwise one anonymous client would see another's."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.user and request.user.is_authenticated:
            return True
        # Refused anonymous calls were counted against the address's rate during authentication.
        if settings.REQUIRE_API_KEY:
            raise AuthenticationRequired()
        if getattr(view, "anonymous_allowed", False):
            return True
        raise AuthenticationRequired(
            "This endpoint stores objects per client and needs an API key (X-API-Key header), "
            "even with REQUIRE_API_KEY=False.",
        )


def authenticated_user(request: Request) -> User:
    """The caller of a view that ApiKeyPolicy guards without ``anonymous_allowed``: always a user,
    so this only narrows ``request.user`` for the type checker."""
    user = request.user
    if isinstance(user, AnonymousUser):  # not reached: ApiKeyPolicy refused the request already
        raise AuthenticationRequired()
    return user


class IsStaff(BasePermission):
    message = "Staff only."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return bool(request.user and request.user.is_staff)
