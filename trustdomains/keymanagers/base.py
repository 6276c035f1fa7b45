"""The key manager interface: CA keys are created and used inside it, never exported."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import ClassVar, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from hallmark.errors import HallmarkError
from hallmark.signing import Signer


class KeyManagerUnavailable(HallmarkError):
    """The key manager cannot sign or create keys now (down, sealed, unreachable, refused).

    The API answers 503 and the agent API gRPC UNAVAILABLE: the request may succeed later,
    and nothing was stored.
    """

    code = "key_manager_unavailable"
    http_status = 503


class KeyAccessDenied(KeyManagerUnavailable):
    """The key manager refused a tenant's credential for a key (wrong tenant or lost policy)."""

    code = "key_access_denied"


class KeyManager(Protocol):
    """A backend holding tenants' private keys (Vault/OpenBao transit, later PKCS#11).

    Key references are opaque strings stored in the database; each names a key that belongs
    to exactly one tenant, and every signing call runs with that tenant's own credential.
    """

    name: ClassVar[str]

    def create_key(self, *, tenant_id: uuid.UUID, purpose: str) -> str:
        """Generate a new non-exportable P-256 key for the tenant; return its key_ref."""
        ...

    def signer(self, key_ref: str, *, tenant_id: uuid.UUID | None = None) -> Signer:
        """A Signer for the key, using the tenant's credential (by default the key's owner)."""
        ...

    def delete_keys(self, *, tenant_id: uuid.UUID) -> None:
        """Destroy every key and credential of the tenant (failed signup, tenant deletion)."""
        ...

    def delete_key(self, key_ref: str) -> None:
        """Destroy one key of its tenant (a new CA whose certification failed)."""
        ...


def key_prefix(tenant_id: uuid.UUID) -> str:
    """The prefix of every key name of the tenant: `hallmark-<tenant uuid hex>-`."""
    return f"hallmark-{tenant_id.hex}-"


def key_name(tenant_id: uuid.UUID, purpose: str, suffix: str | None = None) -> str:
    """`hallmark-<tenant uuid hex>-<purpose>-<suffix>`; the suffix defaults to a fresh UUID."""
    if not purpose.isalnum():
        raise ValueError(f"key purpose must be alphanumeric, got {purpose!r}")
    return f"{key_prefix(tenant_id)}{purpose}-{suffix or uuid.uuid4().hex}"


def tenant_of_key(key_ref: str) -> uuid.UUID:
    """The tenant a key name belongs to (the UUID hex after `hallmark-`)."""
    parts = key_ref.split("-")
    if len(parts) < 4 or parts[0] != "hallmark":  # noqa: PLR2004 - hallmark-<hex>-<purpose>-<n>
        raise ValueError(f"{key_ref!r} is not a Hallmark key name")
    return uuid.UUID(hex=parts[1])


class _SigningBackend(Protocol):
    """What a ManagedKeySigner needs from its key manager."""

    def public_key(self, key_ref: str, tenant_id: uuid.UUID) -> ec.EllipticCurvePublicKey: ...

    def sign_digests(
        self, key_ref: str, tenant_id: uuid.UUID, digests: Sequence[bytes]
    ) -> list[bytes]: ...


class ManagedKeySigner:
    """A Signer over one key held by a key manager, acting with its tenant's credential."""

    def __init__(self, manager: _SigningBackend, key_ref: str, tenant_id: uuid.UUID) -> None:
        self._manager = manager
        self.key_ref = key_ref
        self.tenant_id = tenant_id
        self._public_key: ec.EllipticCurvePublicKey | None = None

    def public_key(self) -> ec.EllipticCurvePublicKey:
        if self._public_key is None:
            self._public_key = self._manager.public_key(self.key_ref, self.tenant_id)
        return self._public_key

    def sign_digest(self, digest: bytes) -> bytes:
        return self._manager.sign_digests(self.key_ref, self.tenant_id, [digest])[0]

    def sign_digests(self, digests: Sequence[bytes]) -> list[bytes]:
        return self._manager.sign_digests(self.key_ref, self.tenant_id, digests)
