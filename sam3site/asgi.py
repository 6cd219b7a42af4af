"""ASGI entry point: HTTP, and websockets (key-authenticated, origin-checked)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sam3site.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up)

from sam3site.routing import websocket_urlpatterns  # noqa: E402
from sam3site.websocket_auth import (  # noqa: E402
    ApiKeyWebsocketAuthMiddleware,
    DatabaseOutageGuard,
    client_origin_validator,
)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # the key is read first: the origin check lets Origin-less programs through only with credentials
        "websocket": DatabaseOutageGuard(
            ApiKeyWebsocketAuthMiddleware(client_origin_validator(URLRouter(websocket_urlpatterns)))
        ),
    }
)
