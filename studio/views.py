"""The Studio page: one static HTML shell; everything it shows comes from the public API.

The page holds no data and needs no login: the visitor types an API key, which the page keeps in
``sessionStorage`` and sends as ``X-API-Key``. The page's own Content-Security-Policy allows this
server only (scripts, styles, fetches, websockets, media from ``blob:`` URLs it makes itself), so
an injected script or a stray asset reference cannot reach another host or exfiltrate the key.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.generic import TemplateView

# 'self' covers ws:/wss: to this host as well (CSP level 3), so websockets need no extra source.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)


class StudioView(TemplateView):
    template_name = "studio/index.html"
    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().get(request, *args, **kwargs)
        response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response["Cache-Control"] = "no-cache"  # the shell is tiny; a new release's scripts are picked up at once
        return response
