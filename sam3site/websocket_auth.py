"""Channels middleware for websocket handshakes: who is connecting, and from which origin.

``DatabaseOutageGuard`` answers a handshake the database cannot serve: accepted, told why, closed.
``ApiKeyWebsocketAuthMiddleware`` fills ``scope["user"]`` from the X-API-Key header.
``ClientOriginValidator`` checks the Origin header against ALLOWED_HOSTS, as channels'
AllowedHostsOriginValidator does, except for handshakes without one: browsers always send an
Origin (that is what stops another site's page from using a visitor's session), programs send
none and authenticate with a key or a ticket, so those are let through when they bring one.
The consumer still authenticates them; no credentials and no Origin is refused here already.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import InterfaceError, OperationalError

from accounts.services import InvalidApiKey, KeyIdentity, api_key_authenticate
from sam3site.errors import DatabaseUnavailable, as_api_error, error_body

UNAVAILABLE_CLOSE_CODE = 4503  # "503" in the application's close-code range (as 4410 for an ended session)

TICKET_SUBPROTOCOL_PREFIX = "ticket."


class DatabaseOutageGuard:
    """Outermost: a handshake that fails because the database is unreachable or out of connections
    (after the pool's timeout) is accepted, sent ``{"type": "error", "error": {code: database_unavailable,
    ..., "retry_after"}}`` and closed with 4503. Daphne can only refuse a handshake
    with 403, which would read as "wrong key"; left alone, it gave no HTTP answer at all."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        accepted = False

        async def watched_send(message: dict[str, Any]) -> None:
            nonlocal accepted
            accepted = accepted or message["type"] == "websocket.accept"
            await send(message)

        try:
            return await self.application(scope, receive, watched_send)
        except (OperationalError, InterfaceError) as error:
            unavailable = as_api_error(error)  # logs the outage once, as for HTTP
            assert isinstance(unavailable, DatabaseUnavailable)
            if not accepted:
                await send({"type": "websocket.accept"})
            body = error_body(unavailable.code, unavailable.message, {"retry_after": unavailable.retry_after})
            await send({"type": "websocket.send", "text": json.dumps({"type": "error", **body})})
            await send({"type": "websocket.close", "code": UNAVAILABLE_CLOSE_CODE})


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
