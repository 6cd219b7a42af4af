from django.apps import AppConfig


class VideoSessionsConfig(AppConfig):
    name = "sessions"
    label = "video_sessions"  # "sessions" is django.contrib.sessions' label
    verbose_name = "Video sessions"
