from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest

from accounts.models import ApiKey, DailyUsage, Quota
from accounts.services import api_key_issue, api_keys_revoke


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "user", "created_at", "expires_at", "revoked", "last_used_at")
    list_filter = ("revoked",)
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    fields = ("user", "name", "prefix", "expires_at", "revoked", "created_at", "last_used_at")
    actions = ("revoke_selected",)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: object, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        full_key = api_key_issue(obj)
        messages.warning(request, f"The new API key is: {full_key} — copy it now, it will not be shown again.")

    @admin.action(description="Revoke selected keys")
    def revoke_selected(self, request: HttpRequest, queryset: object) -> None:
        revoked = api_keys_revoke(keys=queryset)
        messages.success(request, f"Revoked {revoked} key(s).")


@admin.register(DailyUsage)
class DailyUsageAdmin(admin.ModelAdmin):
    list_display = ("day", "user", "api_key", "requests")
    list_filter = ("day",)
    search_fields = ("user__username", "api_key__prefix")
    date_hierarchy = "day"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class QuotaInline(admin.StackedInline):
    model = Quota
    can_delete = False


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    fields = ("name", "prefix", "expires_at", "revoked", "last_used_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # keys are made on the API key page, which shows the secret once


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class ApiUserAdmin(UserAdmin):
    inlines = (QuotaInline, ApiKeyInline)
