from django.urls import path

from labelstudio import views

urlpatterns = [
    path("", views.HealthView.as_view(), name="label-studio-root"),
    path("health", views.HealthView.as_view(), name="label-studio-health"),
    path("setup", views.SetupView.as_view(), name="label-studio-setup"),
    path("versions", views.VersionsView.as_view(), name="label-studio-versions"),
    path("predict", views.PredictView.as_view(), name="label-studio-predict"),
    path("webhook", views.WebhookView.as_view(), name="label-studio-webhook"),
]
