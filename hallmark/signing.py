"""The signer interface: a key that signs SHA-256 digests without ever exposing itself."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils


class Signer(Protocol):
    """An ECDSA P-256 key held somewhere else (HSM, Vault transit, or memory for agents)."""

    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a SHA-256 digest; return the DER-encoded ECDSA signature."""
        ...

    def sign_digests(self, digests: Sequence[bytes]) -> list[bytes]:
        """Sign several digests at once; a backend that can batch should."""
        ...


class LocalSigner:
    """A signer over an in-memory key: for agent-side keys and the core's own tests only."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._key = private_key

    @classmethod
    def generate(cls) -> LocalSigner:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign_digest(self, digest: bytes) -> bytes:
        return self._key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))

    def sign_digests(self, digests: Sequence[bytes]) -> list[bytes]:
        return [self.sign_digest(d) for d in digests]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
