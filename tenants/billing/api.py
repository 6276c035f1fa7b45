"""Billing REST: the tenant's invoices; the operator's plans and period close."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import renderers, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.api.operator import OperatorAPIView
from tenants.billing import services
from tenants.billing.models import Invoice

CSV_MEDIA_TYPE = "text/csv"
PDF_MEDIA_TYPE = "application/pdf"


class _FileRenderer(renderers.BaseRenderer):
    """`?format=csv|pdf`; an error on these formats is still JSON `{code, detail}`."""

    charset = None

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: dict[str, Any] | None = None,
    ) -> bytes:
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"
        return json.dumps(data).encode()


class CsvRenderer(_FileRenderer):
    media_type = CSV_MEDIA_TYPE
    format = "csv"


class PdfRenderer(_FileRenderer):
    media_type = PDF_MEDIA_TYPE
    format = "pdf"


class InvoiceListView(APIView):
    """`GET /api/v1/invoices`: the caller's tenant's invoices, newest month first."""

    permission_resource = "billing"

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        tenant = request._request.tenant  # type: ignore[attr-defined]
        return Response(
            {"results": [services.as_dict(i) for i in services.tenant_invoices(tenant)]}
        )


class InvoiceDetailView(APIView):
    """`GET /api/v1/invoices/{id}`; `?format=csv` or `?format=pdf` for a file."""

    permission_resource = "billing"
    model = Invoice  # the kind of object its URL names (tests/security/test_rest_matrix.py)
    renderer_classes = [renderers.JSONRenderer, CsvRenderer, PdfRenderer]

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["json", "csv", "pdf"])],
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, CSV_MEDIA_TYPE): OpenApiTypes.STR,
            (200, PDF_MEDIA_TYPE): OpenApiTypes.BINARY,
        },
    )
    def get(self, request: Request, pk: Any) -> HttpResponse:
        tenant = request._request.tenant  # type: ignore[attr-defined]
        invoice = services.tenant_invoice(tenant, pk)
        name = f"hallmark-invoice-{invoice.period}-{tenant.slug}"
        kind = request.accepted_renderer.format
        if kind == "csv":
            answer = HttpResponse(services.as_csv(invoice), content_type=CSV_MEDIA_TYPE)
        elif kind == "pdf":
            pdf = services.as_pdf(
                invoice, tenant_name=tenant.name, trust_domain=tenant.trust_domain
            )
            answer = HttpResponse(pdf, content_type=PDF_MEDIA_TYPE)
        else:
            return Response(services.as_dict(invoice))
        answer["Content-Disposition"] = f'attachment; filename="{name}.{kind}"'
        return answer


class ClosePeriodSerializer(serializers.Serializer):  # type: ignore[type-arg]
    period = serializers.CharField(max_length=16)


class ClosePeriodView(OperatorAPIView):
    """`POST /api/v1/operator/billing/close-period` `{period: "YYYY-MM"}`: idempotent."""

    @extend_schema(request=ClosePeriodSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        body = ClosePeriodSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = services.close_period(
            period=body.validated_data["period"],
            actor=str(request.user),
            source=str(request.META.get("REMOTE_ADDR", "")),
        )
        return Response(
            {
                "period": result["period"],
                "created": result["created"],
                "invoices": [
                    {
                        "id": str(i.id),
                        "tenant": str(i.tenant_id),
                        "plan": i.plan,
                        "currency": i.currency,
                        "total": i.total,
                    }
                    for i in result["invoices"]
                ],
            }
        )


class OperatorInvoiceList(OperatorAPIView):
    """`GET /api/v1/operator/invoices?period=`: every tenant's invoices."""

    @extend_schema(
        parameters=[OpenApiParameter("period", str)], responses={200: OpenApiTypes.OBJECT}
    )
    def get(self, request: Request) -> Response:
        period = request.query_params.get("period") or None
        if period is not None and not services.PERIOD.match(period):
            raise services.InvalidPeriod(f"period must be a month YYYY-MM; got {period[:40]!r}")
        return Response({"results": [services.as_dict(i) for i in services.all_invoices(period)]})


class PlanSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.SlugField(max_length=64)
    display_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    currency = serializers.RegexField(r"^[A-Z]{3}$", required=False)
    price_per_month = serializers.IntegerField(min_value=0, required=False)
    max_agents = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    max_entries = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    max_svids_per_month = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    svid_overage_price = serializers.IntegerField(min_value=0, required=False)
    svid_overage_unit = serializers.IntegerField(min_value=1, required=False)


def _plan(plan: Any) -> dict[str, Any]:
    return {
        "name": plan.name,
        "display_name": plan.display_name,
        "currency": plan.currency,
        "price_per_month": plan.price_per_month,
        "max_agents": plan.max_agents,
        "max_entries": plan.max_entries,
        "max_svids_per_month": plan.max_svids_per_month,
        "svid_overage_price": plan.svid_overage_price,
        "svid_overage_unit": plan.svid_overage_unit,
    }


class PlanListView(OperatorAPIView):
    """`GET/POST /api/v1/operator/plans`."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        return Response([_plan(p) for p in services.list_plans()])

    @extend_schema(request=PlanSerializer, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        body = PlanSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        fields = dict(body.validated_data)
        plan = services.create_plan(
            name=fields.pop("name"),
            fields=fields,
            actor=str(request.user),
            source=str(request.META.get("REMOTE_ADDR", "")),
        )
        return Response(_plan(plan), status=status.HTTP_201_CREATED)


class PlanDetailView(OperatorAPIView):
    """`GET/PATCH /api/v1/operator/plans/{name}`."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, name: str) -> Response:
        return Response(_plan(services.get_plan(name)))

    @extend_schema(request=PlanSerializer, responses={200: OpenApiTypes.OBJECT})
    def patch(self, request: Request, name: str) -> Response:
        body = PlanSerializer(data={**request.data, "name": name}, partial=True)
        body.is_valid(raise_exception=True)
        changes = {k: v for k, v in body.validated_data.items() if k != "name"}
        plan = services.change_plan(
            name=name,
            changes=changes,
            actor=str(request.user),
            source=str(request.META.get("REMOTE_ADDR", "")),
        )
        return Response(_plan(plan))
