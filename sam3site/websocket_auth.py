"""Channels middleware for websocket handshakes: who is connecting, and from which origin.

``ApiKeyWebsocketAuthMiddleware`` fills ``scope["user"]`` from the X-API-Key header.
``ClientOriginValidator`` checks the Origin header against ALLOWED_HOSTS, as channels'
AllowedHostsOriginValidator does, except for handshakes without one: browsers always send an
Origin (that is what stops another site's page from using a visitor's session), programs send
none and authenticate with a key or a ticket, so those are let through when they bring one.
The consumer still authenticates them; no credentials and no Origin is refused here already.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from accounts.services import InvalidApiKey, KeyIdentity, api_key_authenticate

TICKET_SUBPROTOCOL_PREFIX = "ticket."


@database_sync_to_async
def _identify(raw_key: str) -> KeyIdentity | None:
    try:
        return api_key_authenticate(raw_key)
    except InvalidApiKey:
        return None


class ApiKeyWebsocketAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        raw_key = dict(scope.get("headers") or []).get(b"x-api-key", b"").decode("latin-1").strip()
        identity = await _identify(raw_key) if raw_key else None
        scope = dict(scope, user=identity.user if identity else AnonymousUser(), api_key_identity=identity)
        return await super().__call__(scope, receive, send)


def _brings_credentials(scope: dict[str, Any]) -> bool:
    user = scope.get("user")
    if user is not None and user.is_authenticated:
        return True
    if parse_qs(scope.get("query_string", b"").decode("latin-1")).get("ticket"):
        return True
    return any(p.startswith(TICKET_SUBPROTOCOL_PREFIX) for p in scope.get("subprotocols") or [])


class ClientOriginValidator(OriginValidator):
    """Goes inside ApiKeyWebsocketAuthMiddleware (it reads ``scope["user"]``)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        has_origin = any(name == b"origin" for name, _ in scope.get("headers") or [])
        if not has_origin and _brings_credentials(scope):
            return await self.application(scope, receive, send)
        return await super().__call__(scope, receive, send)


def client_origin_validator(application: Any) -> ClientOriginValidator:
    allowed_hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed_hosts:  # as channels' AllowedHostsOriginValidator
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return ClientOriginValidator(application, allowed_hosts)
