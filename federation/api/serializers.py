"""Serializers for federation relationships."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from federation.models import FederationRelationship


class RelationshipSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A federation relationship; `trust_domain_bundle` sets the foreign bundle directly."""

    trust_domain_bundle = serializers.JSONField(required=False, allow_null=True, write_only=True)
    bundle = serializers.SerializerMethodField()
    warnings = serializers.SerializerMethodField()

    class Meta:
        model = FederationRelationship
        fields = [
            "id",
            "trust_domain",
            "bundle_endpoint_url",
            "bundle_endpoint_profile",
            "endpoint_spiffe_id",
            "trust_domain_bundle",
            "bundle",
            "bundle_sequence",
            "bundle_updated_at",
            "last_refresh_at",
            "next_refresh_at",
            "last_error",
            "warnings",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "id",
            "bundle_sequence",
            "bundle_updated_at",
            "last_refresh_at",
            "next_refresh_at",
            "last_error",
            "created_at",
            "updated_at",
        ]
        extra_kwargs: dict[str, dict[str, list[object]]] = {"trust_domain": {"validators": []}}

    def get_bundle(self, relationship: FederationRelationship) -> Any:
        if relationship.bundle_endpoint_profile == FederationRelationship.Profile.MANAGED:
            from federation.services import managed_peer_bundle

            bundle = managed_peer_bundle(relationship.trust_domain)
            return bundle.to_jwks() if bundle is not None else None
        return relationship.bundle_json

    def get_warnings(self, relationship: FederationRelationship) -> list[dict[str, str]]:
        from federation.refresh import warnings

        return warnings(relationship)

    def to_representation(self, instance: FederationRelationship) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        if instance.bundle_endpoint_profile == FederationRelationship.Profile.MANAGED:
            bundle = data.get("bundle")
            data["bundle_sequence"] = bundle.get("spiffe_sequence", 0) if bundle else 0
        return data
