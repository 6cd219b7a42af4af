from django.urls import path

from studio.views import StudioView

urlpatterns = [path("", StudioView.as_view(), name="studio")]
