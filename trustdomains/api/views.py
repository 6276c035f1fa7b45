"""GET /api/v1/trust-domain and GET /api/v1/bundle (SPIFFE bundle JSON, or PEM)."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import renderers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from trustdomains import services
from trustdomains.api.serializers import TrustDomainSerializer, TrustDomainUpdateSerializer

BUNDLE_MEDIA_TYPE = "application/json"
PEM_MEDIA_TYPE = "application/x-pem-file"


class PemRenderer(renderers.BaseRenderer):
    """`?format=pem`: PEM text; errors on this format are still JSON `{code, detail}`."""

    media_type = PEM_MEDIA_TYPE
    format = "pem"
    charset = None

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: dict[str, Any] | None = None,
    ) -> bytes:
        if isinstance(data, bytes):
            return data
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"
        return json.dumps(data).encode()


class TrustDomainView(APIView):
    """The caller's trust domain and its authorities."""

    permission_resource = "trust_domain"

    @extend_schema(responses=TrustDomainSerializer)
    def get(self, request: Request) -> Response:
        trust_domain = services.get_trust_domain()
        return Response(TrustDomainSerializer(trust_domain).data)

    @extend_schema(request=TrustDomainUpdateSerializer, responses=TrustDomainSerializer)
    def patch(self, request: Request) -> Response:
        """Choose the upstream authority ("" for self-signed) of the CAs prepared from now on."""
        serializer = TrustDomainUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        trust_domain = services.set_upstream_authority(
            serializer.validated_data["upstream_authority"],
            actor=str(getattr(request, "actor", "unknown")),
            source=str(request.META.get("REMOTE_ADDR", "")),
        )
        return Response(TrustDomainSerializer(trust_domain).data)


class BundleView(APIView):
    """The caller's SPIFFE bundle: JWKS with `spiffe_sequence`; `?format=pem` for PEM."""

    permission_resource = "bundle"

    renderer_classes = [renderers.JSONRenderer, PemRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "format", str, enum=["json", "pem"], description="json (default) or pem"
            )
        ],
        responses={
            (200, BUNDLE_MEDIA_TYPE): OpenApiTypes.OBJECT,
            (200, PEM_MEDIA_TYPE): OpenApiTypes.STR,
        },
    )
    def get(self, request: Request) -> HttpResponse:
        bundle = services.current_bundle()
        if request.accepted_renderer.format == PemRenderer.format:
            return HttpResponse(bundle.x509_pem(), content_type=PEM_MEDIA_TYPE)
        return HttpResponse(bundle.to_json(), content_type=BUNDLE_MEDIA_TYPE)
