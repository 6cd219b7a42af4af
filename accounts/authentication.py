from __future__ import annotations

import base64
import binascii

from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import Throttled
from rest_framework.request import Request

from accounts.services import InvalidApiKey, KeyIdentity, api_key_authenticate
from accounts.throttling import count_anonymous

API_KEY_HEADER = "X-API-Key"


class ApiKeyAuthentication(BaseAuthentication):
    """``X-API-Key: <prefix>.<secret>`` (or a key from API_KEYS). ``request.auth`` is the KeyIdentity.

    A request it cannot identify (no key and no logged-in browser session, or a wrong key) is counted
    against its address's rate here, before the permission check may refuse it with 401: refused
    calls count (key guessing included), and an address over its rate is told 429 first.
    """

    def authenticate(self, request: Request) -> tuple[object, KeyIdentity] | None:
        raw_key = request.headers.get(API_KEY_HEADER)
        if not raw_key:
            if not _has_browser_session(request):  # SessionAuthentication, next in line, will not identify it
                _count_anonymous(request)
            return None
        return self.identify(request, raw_key)

    def identify(self, request: Request, raw_key: str) -> tuple[object, KeyIdentity]:
        try:
            identity = api_key_authenticate(raw_key.strip())
        except InvalidApiKey:
            _count_anonymous(request)
            raise
        request._request.api_key_label = identity.label  # type: ignore[attr-defined]  # per-request attribute, for the log line
        return identity.user, identity

    def authenticate_header(self, request: Request) -> str:
        return API_KEY_HEADER  # makes DRF answer 401 rather than 403


def _has_browser_session(request: Request) -> bool:
    user = getattr(request._request, "user", None)  # Django's session user (the admin's login)
    return bool(user is not None and user.is_authenticated and user.is_active)


def _count_anonymous(request: Request) -> None:
    refusal = count_anonymous(request)
    if refusal is not None:
        raise Throttled(wait=refusal.retry_after)  # answered with ``refusal``'s own words (sam3site.errors)


class ApiKeyBasicAuthentication(ApiKeyAuthentication):
    """HTTP basic auth whose password is an API key (any user name), for tools that send only basic
    auth, such as Label Studio's model connection; ``X-API-Key`` is accepted as well."""

    def authenticate(self, request: Request) -> tuple[object, KeyIdentity] | None:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return super().authenticate(request)
        try:
            _, _, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            password = ""
        return self.identify(request, password)

    def authenticate_header(self, request: Request) -> str:
        return 'Basic realm="sam3"'
