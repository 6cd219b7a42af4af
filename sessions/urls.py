from django.urls import path

from sessions import views

urlpatterns = [
    path("sessions/", views.SessionListView.as_view(), name="session-list"),
    path("sessions/<uuid:session_id>/", views.SessionDetailView.as_view(), name="session-detail"),
    path("sessions/<uuid:session_id>/prompts/", views.SessionPromptView.as_view(), name="session-prompt"),
    path("sessions/<uuid:session_id>/remove-object/", views.SessionRemoveObjectView.as_view(), name="session-remove-object"),
    path("sessions/<uuid:session_id>/reset/", views.SessionResetView.as_view(), name="session-reset"),
    path("sessions/<uuid:session_id>/propagate/", views.SessionPropagateView.as_view(), name="session-propagate"),
    path("sessions/<uuid:session_id>/cancel/", views.SessionCancelView.as_view(), name="session-cancel"),
    path("sessions/<uuid:session_id>/frames/", views.SessionFramesView.as_view(), name="session-frames"),
    path("sessions/<uuid:session_id>/ticket/", views.SessionTicketView.as_view(), name="session-ticket"),
]
