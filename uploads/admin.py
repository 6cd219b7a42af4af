from django.contrib import admin

from uploads.models import Upload


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "kind", "media_type", "size_bytes", "width", "height", "frame_count", "created_at")
    list_filter = ("kind", "media_type")
    search_fields = ("id", "sha256", "owner__username", "original_name")
    readonly_fields = [f.name for f in Upload._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False
