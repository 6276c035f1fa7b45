"""Read-only representations of the trust domain and its authorities (public material only)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hallmark.bundle import USE_JWT, ec_public_jwk
from trustdomains.models import JwtAuthority, TrustDomain, X509Authority


class X509AuthoritySerializer(serializers.ModelSerializer):
    """An X.509 CA: its journal state and public certificate; never the key reference."""

    certificate_pem = serializers.SerializerMethodField()
    upstream_chain_pem = serializers.SerializerMethodField()

    class Meta:
        model = X509Authority
        fields = [
            "id",
            "status",
            "tainted",
            "revoked",
            "not_before",
            "not_after",
            "certificate_pem",
            "upstream_authority",
            "upstream_chain_pem",
        ]
        read_only_fields = fields

    def get_certificate_pem(self, authority: X509Authority) -> str:
        return authority.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @extend_schema_field(serializers.CharField())
    def get_upstream_chain_pem(self, authority: X509Authority) -> str:
        """The upstream's intermediates and roots above an upstream-signed CA ("" if none)."""
        if not authority.upstream_authority:
            return ""
        above = [*authority.upstream_intermediates, *authority.trust_anchors]
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in above).decode()


class JwtAuthoritySerializer(serializers.ModelSerializer):
    """A JWT-SVID signing key: its journal state and public JWK; never the key reference."""

    public_key_jwk = serializers.SerializerMethodField()

    class Meta:
        model = JwtAuthority
        fields = [
            "id",
            "key_id",
            "status",
            "tainted",
            "revoked",
            "not_before",
            "not_after",
            "public_key_jwk",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DictField(child=serializers.CharField()))
    def get_public_key_jwk(self, authority: JwtAuthority) -> dict[str, str]:
        # The JWK exactly as the bundle publishes it (JWT-SVID.md 6.1).
        return {**ec_public_jwk(authority.public_key), "use": USE_JWT, "kid": authority.key_id}


class TrustDomainSerializer(serializers.ModelSerializer):
    """The tenant's trust domain with its X.509 and JWT authorities."""

    x509_authorities = serializers.SerializerMethodField()
    jwt_authorities = serializers.SerializerMethodField()

    class Meta:
        model = TrustDomain
        fields = [
            "name",
            "status",
            "key_manager",
            "upstream_authority",
            "bundle_sequence",
            "x509_authorities",
            "jwt_authorities",
        ]
        read_only_fields = fields

    @extend_schema_field(X509AuthoritySerializer(many=True))
    def get_x509_authorities(self, trust_domain: TrustDomain) -> list[dict[str, object]]:
        authorities = trust_domain.x509_authorities.filter(
            revoked=False, pruned_at__isnull=True
        ).order_by("created_at")
        return list(X509AuthoritySerializer(authorities, many=True).data)

    @extend_schema_field(JwtAuthoritySerializer(many=True))
    def get_jwt_authorities(self, trust_domain: TrustDomain) -> list[dict[str, object]]:
        authorities = trust_domain.jwt_authorities.filter(
            revoked=False, pruned_at__isnull=True
        ).order_by("created_at")
        return list(JwtAuthoritySerializer(authorities, many=True).data)


class TrustDomainUpdateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """`PATCH /api/v1/trust-domain`: what a tenant may change about its trust domain."""

    upstream_authority = serializers.CharField(max_length=64, allow_blank=True)
