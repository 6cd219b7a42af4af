from __future__ import annotations

from collections.abc import Mapping

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.models import ApiKey
from accounts.permissions import ApiKeyPolicy, IsStaff, authenticated_user
from accounts.serializers import ApiKeySerializer, CreatedApiKeySerializer, MeSerializer, UserSerializer
from sam3site.errors import InvalidInput


class MeView(APIView):
    @extend_schema(responses=MeSerializer, summary="The calling user, the key used, effective quota and usage")
    def get(self, request: Request) -> Response:
        user = authenticated_user(request)
        api_key = getattr(request.auth, "api_key", None)
        usage = selectors.usage_overview(user=user, today=timezone.now().date())
        data = {
            "id": user.pk,
            "username": user.get_username(),
            "is_staff": user.is_staff,
            "api_key": api_key.prefix if api_key else getattr(request.auth, "label", None),
            "quota": services.quota_for(user).__dict__,
            "requests_today": usage.requests_today,
            "usage": usage.recent,
        }
        return Response(MeSerializer(data).data)


class ApiKeyViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Your API keys (staff: everyone's). Creating returns the full key once; deleting revokes."""

    serializer_class = ApiKeySerializer
    queryset = ApiKey.objects.none()  # typed path parameter for the schema; requests use get_queryset

    def get_queryset(self) -> QuerySet[ApiKey]:
        return selectors.api_keys_visible_to(user=authenticated_user(self.request))

    @extend_schema(request=ApiKeySerializer, responses={201: CreatedApiKeySerializer})
    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        if not isinstance(request.data, Mapping):
            raise InvalidInput("The body must be a JSON object.", code="invalid_body")
        if not request.user.is_staff and "user" in request.data:
            # Checked before any lookup: the answer must not tell whether that user exists.
            raise InvalidInput("Only staff may name a key's owner; leave `user` out.", code="field_not_allowed")
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key, full_key = services.api_key_create(
            user=serializer.validated_data.get("user") or authenticated_user(request),
            name=serializer.validated_data["name"],
            expires_at=serializer.validated_data.get("expires_at"),
        )
        return Response({**ApiKeySerializer(api_key).data, "key": full_key}, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None}, summary="Revoke a key")
    def destroy(self, request: Request, *args: object, **kwargs: object) -> Response:
        services.api_key_revoke(api_key=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class UserViewSet(viewsets.ModelViewSet):
    """Staff only: API users and their quotas."""

    serializer_class = UserSerializer
    permission_classes: list[type[BasePermission]] = [ApiKeyPolicy, IsStaff]
    queryset = get_user_model().objects.select_related("quota").order_by("id")
