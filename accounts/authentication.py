from __future__ import annotations

from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from accounts.services import KeyIdentity, api_key_authenticate

API_KEY_HEADER = "X-API-Key"


class ApiKeyAuthentication(BaseAuthentication):
    """``X-API-Key: <prefix>.<secret>`` (or a key from API_KEYS). ``request.auth`` is the KeyIdentity."""

    def authenticate(self, request: Request) -> tuple[object, KeyIdentity] | None:
        raw_key = request.headers.get(API_KEY_HEADER)
        if not raw_key:
            return None
        identity = api_key_authenticate(raw_key.strip())
        request._request.api_key_label = identity.label  # for the request log line
        return identity.user, identity

    def authenticate_header(self, request: Request) -> str:
        return API_KEY_HEADER  # makes DRF answer 401 rather than 403
