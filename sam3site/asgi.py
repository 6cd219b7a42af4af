"""ASGI entry point: HTTP, and websockets (origin-checked, key-authenticated)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sam3site.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up)
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from sam3site.routing import websocket_urlpatterns  # noqa: E402
from sam3site.websocket_auth import ApiKeyWebsocketAuthMiddleware  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(ApiKeyWebsocketAuthMiddleware(URLRouter(websocket_urlpatterns))),
    }
)
