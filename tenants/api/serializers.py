"""Serializers for signup."""

from __future__ import annotations

from rest_framework import serializers


class SignupSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """What a new tenant sends to sign up."""

    name = serializers.CharField(max_length=200)
    trust_domain = serializers.CharField(max_length=300)
    # Optional: an upstream authority (named by the operator) that signs the trust domain's CAs.
    upstream_authority = serializers.CharField(
        max_length=64, required=False, allow_blank=True, default=""
    )
    email = serializers.EmailField()
    password = serializers.CharField(write_only=True, max_length=200)
