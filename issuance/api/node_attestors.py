"""`/api/v1/node-attestors`: the tenant's node attestors and their settings (SPIRE's)."""

from __future__ import annotations

import copy
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from issuance import services
from issuance.models import NodeAttestor
from tenants.api.base import TenantResourceViewSet

REDACTED = "<redacted>"
# Settings that are credentials: never answered, kept when a PATCH sends REDACTED back.
SECRET_SETTINGS = frozenset({"token_review_token", "api_server_token", "secret_access_key"})


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (REDACTED if k in SECRET_SETTINGS and v else _redact(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _keep_secrets(new: Any, old: Any) -> Any:
    """`new` with each REDACTED credential replaced by the stored one at the same place."""
    if isinstance(new, dict) and isinstance(old, dict):
        return {
            k: (
                old.get(k)
                if k in SECRET_SETTINGS and v == REDACTED
                else _keep_secrets(v, old.get(k))
            )
            for k, v in new.items()
        }
    return new


class NodeAttestorSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    config = serializers.SerializerMethodField()

    class Meta:
        model = NodeAttestor
        fields = ["id", "type", "config", "created_at", "updated_at"]

    def get_config(self, attestor: NodeAttestor) -> dict[str, Any]:
        return dict(_redact(attestor.config))


class NodeAttestorInputSerializer(serializers.Serializer):  # type: ignore[type-arg]
    type = serializers.CharField(max_length=32)
    config = serializers.JSONField()


class NodeAttestorPatchSerializer(serializers.Serializer):  # type: ignore[type-arg]
    config = serializers.JSONField()


class NodeAttestorViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantResourceViewSet):
    """Node attestors of the tenant: `{type, config}`; join_token is always on."""

    model = NodeAttestor
    serializer_class = NodeAttestorSerializer
    permission_resource = "node_attestors"

    @extend_schema(request=NodeAttestorInputSerializer, responses={201: NodeAttestorSerializer})
    def create(self, request: Request) -> Response:
        body = NodeAttestorInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        attestor = services.create_node_attestor(
            tenant=self.tenant,
            actor=self.actor,
            attestation_type=body.validated_data["type"],
            config=body.validated_data["config"],
            source=self.source(),
        )
        return Response(NodeAttestorSerializer(attestor).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=NodeAttestorPatchSerializer, responses=NodeAttestorSerializer)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        attestor = self.get_object()
        if isinstance(request.data, dict) and "type" in request.data:
            if request.data["type"] != attestor.type:
                from attestors.node.base import InvalidAttestorConfig

                raise InvalidAttestorConfig(
                    "type cannot change; delete this attestor and create another",
                    code="type_immutable",
                )
        body = NodeAttestorPatchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        config = _keep_secrets(copy.deepcopy(body.validated_data["config"]), attestor.config)
        attestor = services.update_node_attestor(
            tenant=self.tenant,
            actor=self.actor,
            attestor_id=attestor.pk,
            config=config,
            source=self.source(),
        )
        return Response(NodeAttestorSerializer(attestor).data)

    def destroy(self, request: Request, pk: str | None = None) -> Response:
        attestor = self.get_object()
        services.delete_node_attestor(
            tenant=self.tenant, actor=self.actor, attestor_id=attestor.pk, source=self.source()
        )
        return Response(status=status.HTTP_204_NO_CONTENT)
