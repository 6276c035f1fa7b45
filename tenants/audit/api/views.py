"""`GET /api/v1/audit-events` (+ `/verify`) and `GET /api/v1/operator/audit-events`."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.api.operator import OperatorAPIView
from tenants.audit import listing
from tenants.audit.models import AuditEvent
from tenants.audit.verify import verify_chain

CONTENT_TYPES = {"jsonl": "application/jsonl", "csv": "text/csv; charset=utf-8"}


class _JsonOnly(DefaultContentNegotiation):
    """`?format=` picks the export (jsonl, csv), not a DRF renderer: always answer JSON."""

    def select_renderer(
        self, request: Request, renderers: list[Any], format_suffix: str | None = None
    ) -> tuple[Any, str]:
        return renderers[0], renderers[0].media_type


_FILTERS = [
    OpenApiParameter("action", str, description="exact action, e.g. entry.create"),
    OpenApiParameter("actor", str, description="exact actor, e.g. token:abcd1234"),
    OpenApiParameter("outcome", str, description="success, failure or denied"),
    OpenApiParameter("since", OpenApiTypes.DATETIME, description="at or after (ISO 8601)"),
    OpenApiParameter("until", OpenApiTypes.DATETIME, description="before (ISO 8601)"),
    OpenApiParameter("cursor", str, description="next_cursor of the previous page"),
    OpenApiParameter("page_size", int, description="1 to 1000 (default 100)"),
    OpenApiParameter("format", str, enum=["json", "jsonl", "csv"], description="jsonl/csv stream"),
]
_PAGE = {200: OpenApiTypes.OBJECT}


def _answer(events: Any, request: Request, *, operator: bool) -> Any:
    query = listing.parse_query(request.query_params, operator=operator)
    if query.format == "json":
        return Response(listing.page(events, query, with_tenant=operator))
    response = StreamingHttpResponse(
        listing.stream(events, query, with_tenant=operator),
        content_type=CONTENT_TYPES[query.format],
    )
    response["Content-Disposition"] = f'attachment; filename="audit-events.{query.format}"'
    return response


class AuditEventList(APIView):
    """The caller's tenant's trail, newest first: filters, a keyset cursor, jsonl/csv export."""

    permission_resource = "audit"
    content_negotiation_class = _JsonOnly

    @extend_schema(parameters=_FILTERS, responses=_PAGE)
    def get(self, request: Request) -> Any:
        return _answer(listing.tenant_events(request.tenant.pk), request, operator=False)  # type: ignore[attr-defined]


class AuditVerify(APIView):
    """`GET /api/v1/audit-events/verify`: re-hash and check the caller's tenant's chain."""

    permission_resource = "audit"

    @extend_schema(responses=_PAGE)
    def get(self, request: Request) -> Response:
        return Response(verify_chain(request.tenant.pk).as_dict())  # type: ignore[attr-defined]


class OperatorAuditEventList(OperatorAPIView):
    """Every tenant's events and the platform's own (`?tenant=` narrows to one tenant)."""

    content_negotiation_class = _JsonOnly

    @extend_schema(
        parameters=[*_FILTERS, OpenApiParameter("tenant", str, description="a tenant's slug")],
        responses=_PAGE,
    )
    def get(self, request: Request) -> Any:
        return _answer(AuditEvent.objects.all(), request, operator=True)
