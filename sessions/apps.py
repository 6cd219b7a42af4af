from django.apps import AppConfig


class VideoSessionsConfig(AppConfig):
    name = "sessions"
    label = "video_sessions"  # "sessions" is django.contrib.sessions' label
    verbose_name = "Video sessions"

    def ready(self) -> None:
        from inference.session_store import register_session_store
        from sessions.store import DatabaseSessionStore

        register_session_store(DatabaseSessionStore())  # how model workers reach these records
