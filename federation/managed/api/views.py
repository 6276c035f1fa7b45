"""`/api/v1/federation-requests`: managed federation between tenants of the platform."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from federation.managed import services
from federation.managed.models import FederationRequest


class FederationRequestSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    direction = serializers.SerializerMethodField()

    class Meta:
        model = FederationRequest
        fields = [
            "id",
            "from_trust_domain",
            "to_trust_domain",
            "status",
            "direction",
            "created_at",
            "decided_at",
        ]

    def get_direction(self, request: FederationRequest) -> str:
        tenant = self.context.get("tenant")
        return (
            "outgoing" if tenant is not None and request.from_tenant_id == tenant.id else "incoming"
        )


class CreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    trust_domain = serializers.CharField(max_length=255)


def _actor(request: Request) -> str:
    return str(getattr(request, "actor", "unknown"))


def _source(request: Request) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))


def _answer(request: Request, row: FederationRequest, code: int = 200) -> Response:
    context: dict[str, Any] = {"tenant": request.tenant}  # type: ignore[attr-defined]
    return Response(FederationRequestSerializer(row, context=context).data, status=code)


class FederationRequestList(APIView):
    """GET: this tenant's incoming and outgoing requests; POST {trust_domain}: ask to federate."""

    permission_resource = "federation"

    @extend_schema(responses={200: FederationRequestSerializer(many=True)})
    def get(self, request: Request) -> Response:
        rows = services.requests_of(request.tenant)  # type: ignore[attr-defined]
        context = {"tenant": request.tenant}  # type: ignore[attr-defined]
        return Response(FederationRequestSerializer(rows, many=True, context=context).data)

    @extend_schema(request=CreateSerializer, responses={201: FederationRequestSerializer})
    def post(self, request: Request) -> Response:
        body = CreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        row = services.create_request(
            tenant=request.tenant,  # type: ignore[attr-defined]
            trust_domain=body.validated_data["trust_domain"],
            actor=_actor(request),
            source=_source(request),
        )
        return _answer(request, row, status.HTTP_201_CREATED)


class FederationRequestDecision(APIView):
    """POST …/{id}/approve|reject (the requested tenant) or …/cancel (the requester)."""

    permission_resource = "federation"
    model = FederationRequest  # the object its URL names (tests/security/test_rest_matrix.py)
    decision = "approve"

    @extend_schema(request=None, responses={200: FederationRequestSerializer})
    def post(self, request: Request, request_id: str) -> Response:
        decide = {
            "approve": services.approve,
            "reject": services.reject,
            "cancel": services.cancel,
        }[self.decision]
        row = decide(
            tenant=request.tenant,  # type: ignore[attr-defined]
            request_id=request_id,
            actor=_actor(request),
            source=_source(request),
        )
        return _answer(request, row)
