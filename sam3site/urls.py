from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from sam3site.errors import json_error_view
from sam3site.health import healthz, readyz
from sam3site.views import ApiRootView

api_v1: list[URLPattern | URLResolver] = [
    path("", ApiRootView.as_view(), name="api-root"),
    path("", include("accounts.urls")),
    path("", include("uploads.urls")),
    path("", include("segmentation.urls")),
    path("", include("sessions.urls")),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[AllowAny], throttle_classes=[]), name="schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[AllowAny], throttle_classes=[]),
        name="swagger-ui",
    ),
    path("api-auth/", include("rest_framework.urls")),  # log in to the browsable API with an admin account
    path("studio/", include("studio.urls")),  # the web page that shows masks; it talks to the public API only
    path("label-studio/", include("labelstudio.urls")),  # Label Studio's ML backend protocol (docs/label-studio.md)
    path("", RedirectView.as_view(url="/studio/", permanent=False)),
]

handler400 = json_error_view(400, "bad_request", "The request is invalid.")
handler403 = json_error_view(403, "forbidden", "You may not do this.")
handler404 = json_error_view(404, "not_found", "Not found.")
handler500 = json_error_view(500, "internal_error", "Internal server error; quote the request id when reporting it.")
