"""The public SPIFFE bundle endpoint and the tenant's federation relationships."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from federation import services
from federation.api.serializers import RelationshipSerializer
from federation.models import FederationRelationship
from hallmark.errors import InvalidTrustDomain
from hallmark.spiffeid import TrustDomain
from tenants.api.base import TenantResourceViewSet
from tenants.scoping import get_tenant_by_trust_domain, tenant_schema


def bundle_endpoint(request: HttpRequest, trust_domain: str) -> HttpResponse:
    """`GET /bundle/<trust domain>`: the SPIFFE bundle (https_web profile), no auth needed.

    Bundles hold public keys only; SPIFFE_Federation.md serves them to anyone. Unknown and
    malformed names answer the same 404 so the endpoint does not enumerate tenants.
    """
    from trustdomains.services import current_bundle

    try:
        name = TrustDomain(trust_domain).name
    except InvalidTrustDomain:
        return JsonResponse({"code": "not_found", "detail": "unknown trust domain"}, status=404)
    tenant = get_tenant_by_trust_domain(name)
    if tenant is None:
        return JsonResponse({"code": "not_found", "detail": "unknown trust domain"}, status=404)
    with tenant_schema(tenant):
        bundle = current_bundle()
    response = HttpResponse(bundle.to_json(), content_type="application/json")
    response["Cache-Control"] = "no-cache"
    return response


class FederationRelationshipViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantResourceViewSet
):
    """`/api/v1/federation-relationships[/<trust domain>]`: create, list, read, patch, delete."""

    model = FederationRelationship
    serializer_class = RelationshipSerializer
    permission_resource = "federation"
    lookup_field = "trust_domain"
    lookup_value_regex = "[a-z0-9._-]{1,255}"

    def create(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        relationship = services.create_relationship(
            trust_domain=data.pop("trust_domain"), actor=self.actor, source=self.source(), **data
        )
        return Response(self.get_serializer(relationship).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, trust_domain: str) -> Response:
        relationship = self.get_object()
        serializer = self.get_serializer(relationship, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        data.pop("trust_domain", None)
        updated = services.update_relationship(
            relationship=relationship, actor=self.actor, source=self.source(), **data
        )
        return Response(self.get_serializer(updated).data)

    def destroy(self, request: Request, trust_domain: str) -> Response:
        services.delete_relationship(
            relationship=self.get_object(), actor=self.actor, source=self.source()
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=True, methods=["post"])
    def refresh(self, request: Request, trust_domain: str) -> Response:
        """Fetch the bundle now (`spire-server federation refresh`); 502 keeps the held one."""
        from federation.fetcher import BundleEndpointError
        from federation.refresh import refresh_relationship

        relationship = self.get_object()
        try:
            refreshed = refresh_relationship(
                trust_domain=relationship.trust_domain, actor=self.actor, source=self.source()
            )
        except BundleEndpointError as exc:
            return Response(
                {"code": "bundle_endpoint_error", "detail": exc.detail, "reason": exc.code},
                status=status.HTTP_502_BAD_GATEWAY,
            )
        return Response(self.get_serializer(refreshed).data)
