"""Channels middleware: fills ``scope["user"]`` from the X-API-Key header of the websocket handshake."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser

from accounts.services import InvalidApiKey, KeyIdentity, api_key_authenticate


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
