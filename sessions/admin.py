from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from sessions import commands
from sessions.models import FrameResult, SessionPrompt, VideoSession


class SessionPromptInline(admin.TabularInline):
    model = SessionPrompt
    fields = ("sequence", "kind", "frame_index", "payload", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(VideoSession)
class VideoSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "status", "worker", "frame_count", "last_activity_at", "created_at")
    list_filter = ("status",)
    search_fields = ("id", "owner__username", "worker")
    readonly_fields = [f.name for f in VideoSession._meta.fields]
    inlines = (SessionPromptInline,)
    actions = ("close_selected",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Close selected sessions")
    def close_selected(self, request: HttpRequest, queryset: QuerySet[VideoSession]) -> None:
        closed = 0
        for session in queryset.filter(status__in=VideoSession.OPEN_STATUSES):
            async_to_sync(commands.session_close)(session=session)
            closed += 1
        messages.success(request, f"Closed {closed} session(s).")


@admin.register(FrameResult)
class FrameResultAdmin(admin.ModelAdmin):
    list_display = ("session", "frame_index", "object_count", "updated_at")
    search_fields = ("session__id",)
