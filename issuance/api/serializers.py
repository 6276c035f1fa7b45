"""Serializers for entries, join tokens and agents; field rules live in issuance.services."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from issuance.models import Agent, Entry, JoinToken
from issuance.services.batch import MAX_BATCH_ITEMS


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


class EntryChangeSerializer(EntryInputSerializer):
    """One item of batch-update: the entry's `id` and the fields to change (as PATCH)."""

    id = serializers.CharField(trim_whitespace=False)

    def get_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = super().get_fields()
        for name, field in fields.items():
            field.required = name == "id"
        return fields


class BatchCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """`{entries: [entry, ...]}`: 1 to 500 entries, each as POST /entries takes it."""

    entries = serializers.ListField(
        child=EntryInputSerializer(), min_length=1, max_length=MAX_BATCH_ITEMS
    )


class BatchUpdateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """`{entries: [{id, ...fields}, ...]}`: 1 to 500 changes, each as PATCH."""

    entries = serializers.ListField(
        child=EntryChangeSerializer(), min_length=1, max_length=MAX_BATCH_ITEMS
    )


class BatchDeleteSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """`{ids: [...]}`: 1 to 500 entry ids."""

    ids = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False),
        min_length=1,
        max_length=MAX_BATCH_ITEMS,
    )


class BatchStatusSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """An item's outcome: `ok`, or the code (and detail) the single-entry call would answer."""

    code = serializers.CharField()
    detail = serializers.CharField(allow_blank=True)


class BatchResultSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """One item's result: its status and the entry (as stored, or as it was when deleted)."""

    status = BatchStatusSerializer()
    entry = EntrySerializer(allow_null=True)


class BatchResultsSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """One result per item, in the order of the items."""

    results = BatchResultSerializer(many=True)


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
            "selectors",
            "created_at",
            "last_seen",
        ]
        read_only_fields = fields
