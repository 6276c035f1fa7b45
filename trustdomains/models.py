"""Tenant-schema models: the trust domain, its X.509 and JWT authorities (public parts only)."""

from __future__ import annotations

import uuid

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import models

from hallmark.bundle import load_der_certificates


class TrustDomain(models.Model):
    """The tenant's SPIFFE trust domain; exactly one row in each tenant schema."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        DISABLED = "disabled"

    name = models.CharField(max_length=255, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    key_manager = models.CharField(max_length=32)
    # Bumped whenever the published bundle changes (SPIFFE bundle `spiffe_sequence`).
    bundle_sequence = models.PositiveBigIntegerField(default=1)
    # When it last was (NULL: not since the trust domain was created): the bundle sequence age
    # an operator watches (hallmark_bundle_sequence_age_seconds).
    bundle_sequence_changed_at = models.DateTimeField(null=True, blank=True)
    # The upstream authority (trustdomains.upstream) that signs the CAs made from now on;
    # empty: self-signed CAs.
    upstream_authority = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class AuthorityQuerySet(models.QuerySet):  # type: ignore[type-arg]
    """Queries shared by X.509 and JWT authorities."""

    def published(self) -> AuthorityQuerySet:
        """In the bundle: prepared, active or old; neither revoked nor pruned, oldest first.

        An expired authority stays until rotation prunes it (with a sequence bump), so the
        published bundle never changes without a new `spiffe_sequence`.
        """
        return self.filter(
            status__in=("prepared", "active", "old"), revoked=False, pruned_at__isnull=True
        ).order_by("not_before", "created_at")


class Authority(models.Model):
    """What X.509 and JWT authorities share: the journal (prepared / active / old) and key."""

    class Status(models.TextChoices):
        PREPARED = "prepared"
        ACTIVE = "active"
        OLD = "old"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices)
    tainted = models.BooleanField(default=False)
    revoked = models.BooleanField(default=False)
    key_manager = models.CharField(max_length=32)
    key_ref = models.CharField(max_length=255, unique=True)
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    # Set when rotation takes the expired authority out of the bundle (PRUNE_GRACE_SECONDS).
    pruned_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AuthorityQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["created_at"]


class X509Authority(Authority):
    """An X.509 CA of the trust domain: its certificate and a reference to its key, never the key.

    Journal as SPIRE's: `prepared` (published in the bundle, not signing yet), `active` (signs
    new SVIDs), `old` (still published). An authority leaves the bundle only by an explicit,
    sequence-bumping change: revoked (forced), or pruned by rotation a grace period after it
    expired (`pruned_at`); expiry alone never changes the published bundle.
    """

    trust_domain = models.ForeignKey(
        TrustDomain, on_delete=models.CASCADE, related_name="x509_authorities"
    )
    certificate_der = models.BinaryField()
    # Upstream-signed CAs only: who signed it, the intermediates between it and the upstream
    # root (concatenated DER, may be empty) and the upstream's trust anchors (concatenated
    # DER), which the bundle publishes instead of the CA itself.
    upstream_authority = models.CharField(max_length=64, blank=True, default="")
    upstream_chain_der = models.BinaryField(default=b"")
    upstream_roots_der = models.BinaryField(default=b"")

    class Meta(Authority.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["trust_domain"],
                condition=models.Q(status="active"),
                name="one_active_x509_authority",
            ),
            # Never two prepared authorities: rotation and forced prepare both rely on it.
            models.UniqueConstraint(
                fields=["trust_domain"],
                condition=models.Q(status="prepared"),
                name="one_prepared_x509_authority",
            ),
        ]

    def __str__(self) -> str:
        return f"X.509 authority {self.id} ({self.status})"

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(bytes(self.certificate_der))

    @property
    def upstream_intermediates(self) -> list[x509.Certificate]:
        """What an SVID chain carries after this CA: the upstream's intermediates, if any."""
        return load_der_certificates(bytes(self.upstream_chain_der))

    @property
    def trust_anchors(self) -> list[x509.Certificate]:
        """What the bundle publishes for this CA: itself, or the upstream's roots."""
        if not self.upstream_authority:
            return [self.certificate]
        return load_der_certificates(bytes(self.upstream_roots_der))


class JwtAuthority(Authority):
    """A JWT-SVID signing key of the trust domain: its `kid`, public key and key reference.

    The private key stays in the key manager. Same journal as `X509Authority`; every
    prepared, active or old authority that is neither revoked nor pruned is in the bundle.
    """

    trust_domain = models.ForeignKey(
        TrustDomain, on_delete=models.CASCADE, related_name="jwt_authorities"
    )
    # The JWK `kid` (JWT-SVID.md 6.1): random and URL-safe, never derived from the key_ref.
    key_id = models.CharField(max_length=64, unique=True)
    public_key_der = models.BinaryField()  # SubjectPublicKeyInfo

    class Meta(Authority.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["trust_domain"],
                condition=models.Q(status="active"),
                name="one_active_jwt_authority",
            ),
            # Never two prepared authorities: rotation and forced prepare both rely on it.
            models.UniqueConstraint(
                fields=["trust_domain"],
                condition=models.Q(status="prepared"),
                name="one_prepared_jwt_authority",
            ),
        ]

    def __str__(self) -> str:
        return f"JWT authority {self.key_id} ({self.status})"

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        key = serialization.load_der_public_key(bytes(self.public_key_der))
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise TypeError(f"JWT authority {self.key_id} does not hold an EC public key")
        return key
