"""Vault/OpenBao transit as a key manager: one non-exportable transit key per CA key.

Each tenant gets an ACL policy `hallmark-tenant-<uuid hex>` that allows signing with, and
reading the public half of, its own keys only, and a short-lived token with just that policy.
The platform token (settings.VAULT_TOKEN) only creates keys, policies and tenant tokens;
every signature is made with the tenant's token, so one tenant's credential can never use
another tenant's key. Tenant tokens live in this process's memory, never in the database.
"""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import hvac
import hvac.exceptions
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustdomains.keymanagers.base import (
    KeyAccessDenied,
    KeyManagerUnavailable,
    ManagedKeySigner,
    key_name,
    key_prefix,
    tenant_of_key,
)
from trustdomains.keymanagers.observed import observed

T = TypeVar("T")
BATCH_SIZE = 100  # digests per transit batch_input request
TOKEN_TTL_SECONDS = 3600
TOKEN_REFRESH_MARGIN_SECONDS = 300  # re-create a tenant token this long before it expires
REQUEST_TIMEOUT_SECONDS = 10.0


def tenant_policy_name(tenant_id: uuid.UUID) -> str:
    return f"hallmark-tenant-{tenant_id.hex}"


def tenant_policy(tenant_id: uuid.UUID, mount: str) -> str:
    """HCL: sign with and read the tenant's own transit keys, nothing else."""
    prefix = key_prefix(tenant_id)
    return (
        f'path "{mount}/sign/{prefix}*" {{\n  capabilities = ["update"]\n}}\n'
        f'path "{mount}/keys/{prefix}*" {{\n  capabilities = ["read"]\n}}\n'
    )


def _describe(  # noqa: PLR0911 - one answer per kind of failure
    exc: Exception, address: str, action: str
) -> KeyManagerUnavailable:
    """Translate an hvac/requests failure into a named error that says what to check."""
    where = f"Vault/OpenBao at {address}"
    if isinstance(exc, requests.exceptions.Timeout):
        return KeyManagerUnavailable(
            f"{where} did not answer in time while trying to {action}; check that the server "
            "is running and not overloaded (HALLMARK_VAULT_ADDR)"
        )
    if isinstance(exc, requests.exceptions.RequestException):
        return KeyManagerUnavailable(
            f"cannot reach {where} to {action} ({type(exc).__name__}); check HALLMARK_VAULT_ADDR "
            "and that the server is running"
        )
    if isinstance(exc, hvac.exceptions.VaultNotInitialized):
        return KeyManagerUnavailable(f"{where} is not initialised; initialise and unseal it")
    if isinstance(exc, hvac.exceptions.VaultDown):
        return KeyManagerUnavailable(
            f"{where} is sealed or in maintenance, so Hallmark cannot {action}; unseal it"
        )
    if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
        return KeyAccessDenied(
            f"{where} refused the credential used to {action}: {vault_error_text(exc)}"
        )
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return KeyManagerUnavailable(
            f"{where} has no such key or mount while trying to {action}; check that the "
            "transit engine is mounted (HALLMARK_VAULT_TRANSIT_MOUNT) and the key exists"
        )
    if isinstance(exc, hvac.exceptions.InternalServerError | hvac.exceptions.BadGateway):
        return KeyManagerUnavailable(
            f"{where} failed to {action} ({vault_error_text(exc)}); check the server's logs"
        )
    if isinstance(exc, hvac.exceptions.VaultError):
        return KeyManagerUnavailable(f"{where} refused to {action}: {vault_error_text(exc)}")
    return KeyManagerUnavailable(f"{where}: unexpected error while trying to {action}: {exc}")


def vault_error_text(exc: Exception) -> str:
    """The errors an hvac exception carries, on one line (without the request URL)."""
    errors = getattr(exc, "errors", None)
    text = "; ".join(str(e) for e in errors) if errors else str(exc).split(", on ", 1)[0]
    return " ".join(text.split())


def _der_signature(vault_signature: str) -> bytes:
    """`vault:v1:<base64 DER>` → the DER ECDSA signature."""
    if not vault_signature.startswith("vault:v"):
        raise KeyManagerUnavailable(f"unexpected transit signature format {vault_signature[:16]!r}")
    return base64.b64decode(vault_signature.rsplit(":", 1)[1])


@dataclass
class _TenantToken:
    client: hvac.Client
    accessor: str
    refresh_at: float  # time.monotonic() after which the token is re-created


class VaultTransitKeyManager:
    """Keys in Vault/OpenBao transit, used with per-tenant policies and tokens."""

    name: ClassVar[str] = "vault"

    def __init__(
        self,
        *,
        address: str,
        token: str,
        mount: str = "transit",
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        token_ttl: int = TOKEN_TTL_SECONDS,
        ca_file: str | None = None,
    ) -> None:
        self.address = address.rstrip("/")
        self.mount = mount
        # TLS to Vault: its CA bundle (HALLMARK_VAULT_CACERT), else the system's roots.
        self._verify: str | bool = ca_file or True
        self._platform_token = token
        self._timeout = timeout
        self._token_ttl = token_ttl
        self._lock = threading.Lock()
        self._reset()

    @classmethod
    def from_settings(cls) -> VaultTransitKeyManager:
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        token = settings.VAULT_TOKEN
        if not token and settings.VAULT_TOKEN_FILE:
            token = Path(settings.VAULT_TOKEN_FILE).read_text().strip()
        if not token:
            raise ImproperlyConfigured(
                "HALLMARK_VAULT_TOKEN (or HALLMARK_VAULT_TOKEN_FILE) is required for the "
                "vault key manager"
            )
        return cls(
            address=settings.VAULT_ADDR,
            token=token,
            mount=settings.VAULT_TRANSIT_MOUNT,
            ca_file=settings.VAULT_CACERT,
        )

    # -- KeyManager ------------------------------------------------------------------------
    @observed("create_key")
    def create_key(self, *, tenant_id: uuid.UUID, purpose: str) -> str:
        name = key_name(tenant_id, purpose)
        platform = self._platform()
        self._ensure_policy(tenant_id)
        self._call(
            "create a transit key",
            lambda: platform.secrets.transit.create_key(
                name,
                key_type="ecdsa-p256",
                exportable=False,
                allow_plaintext_backup=False,
                mount_point=self.mount,
            ),
        )
        return name

    def signer(self, key_ref: str, *, tenant_id: uuid.UUID | None = None) -> ManagedKeySigner:
        return ManagedKeySigner(self, key_ref, tenant_id or tenant_of_key(key_ref))

    @observed("delete_keys")
    def delete_keys(self, *, tenant_id: uuid.UUID) -> None:
        platform = self._platform()
        prefix = key_prefix(tenant_id)
        try:
            listed = platform.secrets.transit.list_keys(mount_point=self.mount)
            names = [n for n in listed["data"]["keys"] if n.startswith(prefix)]
        except hvac.exceptions.InvalidPath:  # no keys at all in the mount
            names = []
        except Exception as exc:
            raise _describe(exc, self.address, "list transit keys") from exc
        transit = platform.secrets.transit
        for name in names:
            self._call(
                "allow deleting a transit key",
                partial(
                    transit.update_key_configuration,
                    name,
                    deletion_allowed=True,
                    mount_point=self.mount,
                ),
            )
            self._call(
                "delete a transit key",
                partial(transit.delete_key, name, mount_point=self.mount),
            )
        self._forget_tenant(tenant_id, revoke=True)
        self._call(
            "delete a tenant policy",
            lambda: platform.sys.delete_policy(tenant_policy_name(tenant_id)),
        )

    @observed("delete_key")
    def delete_key(self, key_ref: str) -> None:
        tenant_of_key(key_ref)  # only Hallmark's own key names
        transit = self._platform().secrets.transit
        self._call(
            "allow deleting a transit key",
            partial(
                transit.update_key_configuration,
                key_ref,
                deletion_allowed=True,
                mount_point=self.mount,
            ),
        )
        self._call(
            "delete a transit key", partial(transit.delete_key, key_ref, mount_point=self.mount)
        )

    # -- signing with the tenant's token -----------------------------------------------------
    @observed("public_key")
    def public_key(self, key_ref: str, tenant_id: uuid.UUID) -> ec.EllipticCurvePublicKey:
        answer = self._as_tenant(
            tenant_id,
            "read a transit public key",
            lambda c: c.secrets.transit.read_key(key_ref, mount_point=self.mount),
        )
        data = answer["data"]
        pem = data["keys"][str(data["latest_version"])]["public_key"]
        key = serialization.load_pem_public_key(pem.encode())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise KeyManagerUnavailable(f"transit key {key_ref} is not an EC key")
        return key

    @observed("sign")
    def sign_digests(
        self, key_ref: str, tenant_id: uuid.UUID, digests: Sequence[bytes]
    ) -> list[bytes]:
        signatures: list[bytes] = []
        for start in range(0, len(digests), BATCH_SIZE):
            chunk = digests[start : start + BATCH_SIZE]
            signatures += self._sign_chunk(key_ref, tenant_id, chunk)
        return signatures

    def _sign_chunk(
        self, key_ref: str, tenant_id: uuid.UUID, digests: Sequence[bytes]
    ) -> list[bytes]:
        encoded = [base64.b64encode(d).decode() for d in digests]
        options: dict[str, Any] = {
            "prehashed": True,
            "hash_algorithm": "sha2-256",
            "marshaling_algorithm": "asn1",
            "mount_point": self.mount,
        }
        if len(encoded) == 1:
            answer = self._as_tenant(
                tenant_id,
                "sign with a transit key",
                lambda c: c.secrets.transit.sign_data(key_ref, hash_input=encoded[0], **options),
            )
            return [_der_signature(answer["data"]["signature"])]
        answer = self._as_tenant(
            tenant_id,
            "batch-sign with a transit key",
            lambda c: c.secrets.transit.sign_data(
                key_ref, batch_input=[{"input": e} for e in encoded], **options
            ),
        )
        results = answer["data"]["batch_results"]
        failed = [r["error"] for r in results if r.get("error")]
        if failed or len(results) != len(encoded):
            raise KeyManagerUnavailable(
                f"Vault/OpenBao at {self.address} failed to sign {len(failed)} of "
                f"{len(encoded)} digests: {failed[:1]}"
            )
        return [_der_signature(r["signature"]) for r in results]

    # -- tokens and policies -----------------------------------------------------------------
    def _as_tenant(self, tenant_id: uuid.UUID, action: str, call: Callable[[hvac.Client], T]) -> T:
        """Run `call` with the tenant's token; on 403 re-create the token once and retry."""
        token = self._tenant_token(tenant_id)
        try:
            return call(token.client)
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            # The token expired or was revoked, or its policy is gone or changed: both are
            # written afresh for the retry.
            self._forget_tenant(tenant_id, revoke=False)
        except Exception as exc:
            raise _describe(exc, self.address, action) from exc
        token = self._tenant_token(tenant_id)
        return self._call(action, lambda: call(token.client))

    def _tenant_token(self, tenant_id: uuid.UUID) -> _TenantToken:
        self._check_fork()
        with self._lock:
            cached = self._tokens.get(tenant_id)
            if cached is not None and time.monotonic() < cached.refresh_at:
                return cached
        fresh = self._create_tenant_token(tenant_id)
        with self._lock:
            self._tokens[tenant_id] = fresh
        return fresh

    def _create_tenant_token(self, tenant_id: uuid.UUID) -> _TenantToken:
        platform = self._platform()
        self._ensure_policy(tenant_id)
        answer = self._call(
            "create a tenant token",
            lambda: platform.auth.token.create(
                policies=[tenant_policy_name(tenant_id)],
                no_default_policy=True,
                renewable=True,
                ttl=f"{self._token_ttl}s",
                display_name=f"hallmark-tenant-{tenant_id.hex}",
                meta={"tenant": str(tenant_id)},
            ),
        )
        auth = answer["auth"]
        lease = int(auth.get("lease_duration") or self._token_ttl)
        margin = min(TOKEN_REFRESH_MARGIN_SECONDS, lease // 2)
        return _TenantToken(
            client=self._client(auth["client_token"]),
            accessor=auth.get("accessor", ""),
            refresh_at=time.monotonic() + lease - margin,
        )

    def _forget_tenant(self, tenant_id: uuid.UUID, *, revoke: bool) -> None:
        """Forget the tenant's token (revoking it in Vault with `revoke`) and that its policy
        was written: the next call writes both again."""
        with self._lock:
            cached = self._tokens.pop(tenant_id, None)
            self._policies.discard(tenant_id)
        if revoke and cached is not None and cached.accessor:
            platform = self._platform()
            self._call(
                "revoke a tenant token",
                lambda: platform.auth.token.revoke_accessor(cached.accessor),
            )

    def _ensure_policy(self, tenant_id: uuid.UUID) -> None:
        """Write the tenant's policy, once per process: a signup asked for it three times
        (each key, then the tenant token), each a storage write in Vault. A policy removed
        behind this process's back shows as a 403, and `_as_tenant` writes it again."""
        platform = self._platform()
        with self._lock:
            if tenant_id in self._policies:
                return
        self._call(
            "write a tenant policy",
            lambda: platform.sys.create_or_update_policy(
                tenant_policy_name(tenant_id), tenant_policy(tenant_id, self.mount)
            ),
        )
        with self._lock:
            self._policies.add(tenant_id)

    # -- plumbing ----------------------------------------------------------------------------
    def _client(self, token: str) -> hvac.Client:
        return hvac.Client(
            url=self.address, token=token, timeout=self._timeout, verify=self._verify
        )

    def _platform(self) -> hvac.Client:
        self._check_fork()
        return self._platform_client

    def _call(self, action: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except Exception as exc:
            raise _describe(exc, self.address, action) from exc

    def _check_fork(self) -> None:
        # A forked worker must not share HTTP connections (or cached clients) with its parent.
        if self._pid != os.getpid():
            with self._lock:
                self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._platform_client = self._client(self._platform_token)
        self._tokens: dict[uuid.UUID, _TenantToken] = {}
        self._policies: set[uuid.UUID] = set()  # tenants whose policy this process wrote
