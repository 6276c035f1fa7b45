"""`GET /api/v1/usage` (the tenant's) and `GET /api/v1/operator/usage` (every tenant's)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.api.operator import OperatorAPIView
from tenants.metering import services

RANGE = [
    OpenApiParameter("from", str, description="first day, YYYY-MM-DD (UTC)"),
    OpenApiParameter("to", str, description="last day, YYYY-MM-DD (UTC), inclusive"),
]


class UsageView(APIView):
    """The caller's tenant: plan, quotas, totals and one row a day."""

    permission_resource = "usage"

    @extend_schema(parameters=RANGE, responses={200: dict})
    def get(self, request: Request) -> Response:
        first, last = services.parse_range(
            request.query_params.get("from"), request.query_params.get("to")
        )
        return Response(services.tenant_usage(request._request.tenant, first, last))  # type: ignore[attr-defined]


class OperatorUsageView(OperatorAPIView):
    """Every tenant's usage per day."""

    @extend_schema(parameters=RANGE, responses={200: dict})
    def get(self, request: Request) -> Response:
        first, last = services.parse_range(
            request.query_params.get("from"), request.query_params.get("to")
        )
        return Response(services.all_usage(first, last))
