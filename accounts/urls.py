from django.urls import include, path
from rest_framework.routers import DefaultRouter

from accounts.views import ApiKeyViewSet, MeView, UserViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("keys", ApiKeyViewSet, basename="apikey")
router.register("users", UserViewSet, basename="user")

urlpatterns = [
    path("me/", MeView.as_view(), name="me"),
    path("", include(router.urls)),
]
