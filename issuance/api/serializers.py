"""Serializers for entries, join tokens and agents; field rules live in issuance.services."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from issuance.models import Agent, Entry, JoinToken


class EntrySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A registration entry as the API answers it."""

    class Meta:
        model = Entry
        fields = [
            "id",
            "spiffe_id",
            "parent_id",
            "selectors",
            "x509_svid_ttl",
            "jwt_svid_ttl",
            "dns_names",
            "hint",
            "federates_with",
            "admin",
            "downstream",
            "expires_at",
            "revision",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class EntryInputSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Shapes of an entry body; SPIFFE IDs, selectors, TTLs and names are checked by services."""

    spiffe_id = serializers.CharField(trim_whitespace=False)
    parent_id = serializers.CharField(trim_whitespace=False)
    selectors = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False), allow_empty=True
    )
    x509_svid_ttl = serializers.IntegerField(required=False, allow_null=True)
    jwt_svid_ttl = serializers.IntegerField(required=False, allow_null=True)
    dns_names = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False), required=False, allow_null=True
    )
    hint = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, trim_whitespace=False
    )
    federates_with = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False), required=False, allow_null=True
    )
    admin = serializers.BooleanField(required=False)
    downstream = serializers.BooleanField(required=False)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = set(data) - set(self.fields)
            if unknown:
                raise serializers.ValidationError(
                    {name: ["unknown field"] for name in sorted(unknown)}
                )
        return super().to_internal_value(data)


class JoinTokenCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """`{ttl, spiffe_id?}` for a new join token."""

    ttl = serializers.IntegerField(required=False, allow_null=True)
    spiffe_id = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, trim_whitespace=False
    )


class NewJoinTokenSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """The one answer that carries the join token's secret."""

    id = serializers.UUIDField()
    token = serializers.CharField()
    expires_at = serializers.DateTimeField()
    spiffe_id = serializers.CharField(allow_null=True)


class JoinTokenSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A join token without its secret (which is not stored)."""

    agent_id = serializers.UUIDField(allow_null=True, read_only=True)

    class Meta:
        model = JoinToken
        fields = ["id", "expires_at", "spiffe_id", "used_at", "agent_id", "created_at"]
        read_only_fields = fields


class AgentSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """An attested agent."""

    class Meta:
        model = Agent
        fields = [
            "id",
            "spiffe_id",
            "attestation_type",
            "serial",
            "expires_at",
            "banned",
            "node_aliases",
            "created_at",
            "last_seen",
        ]
        read_only_fields = fields
