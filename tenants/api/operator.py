"""The operator REST API under /api/v1/operator/: operator tokens only (a tenant's → 403)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import authentication, exceptions, permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants import operators
from tenants.api.authentication import InvalidToken, bearer_secret, live_tenant_token
from tenants.models import Operator, OperatorToken, Tenant


class OperatorPrincipal:
    """A platform operator acting through one of its tokens."""

    is_authenticated = True
    is_anonymous = False
    is_platform_operator = True

    def __init__(self, token: OperatorToken) -> None:
        self.token = token
        self.operator: Operator = token.operator
        self.email = token.operator.email

    def __str__(self) -> str:
        return f"operator:{self.email}"


class OperatorTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <operator token>`; a live tenant token here is 403, not 401."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, OperatorToken] | None:
        secret = bearer_secret(request)
        if secret is None:
            return None
        token = operators.live_operator_token(secret)
        if token is not None:
            principal = OperatorPrincipal(token)
            request._request.actor = str(principal)  # type: ignore[attr-defined]
            return (principal, token)
        if live_tenant_token(secret) is not None:
            raise exceptions.PermissionDenied("this route takes a platform operator's token")
        raise InvalidToken()

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class IsPlatformOperator(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if request.user is None or not getattr(request.user, "is_authenticated", False):
            raise exceptions.NotAuthenticated()
        if not getattr(request.user, "is_platform_operator", False):
            raise exceptions.PermissionDenied("this route takes a platform operator's token")
        return True


class OperatorAPIView(APIView):
    """Base of every /api/v1/operator/ view."""

    authentication_classes = [OperatorTokenAuthentication]
    permission_classes = [IsPlatformOperator]


class QuotasSerializer(serializers.Serializer):  # type: ignore[type-arg]
    max_agents = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    max_entries = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    max_svids_per_month = serializers.IntegerField(min_value=0, required=False, allow_null=True)


class OperatorTenantSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    quotas = QuotasSerializer()

    class Meta:
        model = Tenant
        fields = ["id", "slug", "name", "trust_domain", "status", "plan", "quotas", "created_at"]


class TenantChangeSerializer(serializers.Serializer):  # type: ignore[type-arg]
    status = serializers.ChoiceField(choices=["active", "suspended"], required=False)
    plan = serializers.CharField(max_length=64, required=False, allow_blank=True)
    quotas = QuotasSerializer(required=False)

    def validate_plan(self, value: str) -> str:
        from tenants.billing import services as billing

        if not billing.plan_exists(value):
            raise serializers.ValidationError(f"no plan {value!r}; see /api/v1/operator/plans")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError("send at least one of status, plan, quotas")
        return attrs


class OperatorTenantList(OperatorAPIView):
    """`GET /api/v1/operator/tenants`: every tenant with its status, plan and quotas."""

    @extend_schema(responses=OperatorTenantSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(OperatorTenantSerializer(operators.list_tenants(), many=True).data)


class OperatorTenantDetail(OperatorAPIView):
    """`GET/PATCH /api/v1/operator/tenants/{id}`: show; suspend, reactivate, plan, quotas."""

    model = Tenant

    @extend_schema(responses=OperatorTenantSerializer)
    def get(self, request: Request, tenant_id: Any) -> Response:
        return Response(OperatorTenantSerializer(operators.get_tenant(tenant_id)).data)

    @extend_schema(request=TenantChangeSerializer, responses=OperatorTenantSerializer)
    def patch(self, request: Request, tenant_id: Any) -> Response:
        body = TenantChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        tenant = operators.change_tenant(
            tenant_id,
            changes=dict(body.validated_data),
            actor=str(request.user),
            source=str(request.META.get("REMOTE_ADDR", "")),
        )
        return Response(OperatorTenantSerializer(tenant).data)
