from django.urls import path

from sessions.consumers import SessionConsumer
from sessions.live_consumer import LiveSessionConsumer

websocket_urlpatterns = [
    path("ws/sessions/<uuid:session_id>/", SessionConsumer.as_asgi()),
    path("ws/sessions/<uuid:session_id>/live/", LiveSessionConsumer.as_asgi()),
]
