"""PKCS#11 as a key manager: each tenant's keys in a token of its own (SoftHSM2 here).

Tenant T's token is labelled `hallmark-<T in base64url>` (see `token_label`); it is created
on demand in a free slot.
Its user PIN (and SO PIN) are HMAC-SHA256 of the tenant id under a platform secret that
comes from the environment or a secret file, never the database, so one tenant's
credential cannot open another tenant's token. Keys are P-256 pairs generated on the token,
sensitive and non-extractable, labelled with their key_ref. Signing hashes in Python and
signs with CKM_ECDSA (SoftHSM 2.6 lacks CKM_ECDSA_SHA256), DER-encoding r||s.

Concurrency: see `pkcs11tokens` (module re-initialised with OS locking, one session per
thread at a time from a bounded pool per token). Scale with processes: every process loads
the module and logs in for itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from trustdomains.keymanagers.base import (
    KeyAccessDenied,
    KeyManagerUnavailable,
    ManagedKeySigner,
    key_name,
    tenant_of_key,
)
from trustdomains.keymanagers.observed import observed
from trustdomains.keymanagers.pkcs11tokens import (
    ModuleFailure,
    PooledSession,
    TokenMissing,
    library_for,
)

T = TypeVar("T")
DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
DELETED_LABEL = "hallmark-deleted"
RELOAD_INTERVAL = 2.0  # seconds between re-scans for a token that is missing
SIGNATURE_HALF = 32  # P-256: r and s are 32 bytes each
SOFTHSM2_CONF = """\
# Written by Hallmark for its embedded (development) mode.
directories.tokendir = {tokendir}
objectstore.backend = file
log.level = ERROR
slots.removable = false
slots.mechanisms = ALL
library.reset_on_fork = false
"""


def token_label(tenant_id: uuid.UUID) -> str:
    """`hallmark-<tenant id, unpadded base64url>`: 31 characters (PKCS#11 allows 32).

    The tenant's UUID in hex would make the label 41 characters, too long for a token.
    """
    encoded = base64.urlsafe_b64encode(tenant_id.bytes).rstrip(b"=").decode()
    return f"hallmark-{encoded}"


def derive_pin(secret: bytes, tenant_id: uuid.UUID, role: str) -> str:
    """The tenant's PIN for `role` ("user" or "so"): HMAC-SHA256 of the tenant id."""
    message = f"hallmark-pkcs11-{role}-pin:{tenant_id}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def load_pin_secret(secret: str | None, secret_file: str | None, *, generate: bool) -> bytes:
    """The platform PIN secret: given, read from a file, or (embedded mode) generated once."""
    if secret:
        return secret.encode()
    if not secret_file:
        raise KeyManagerUnavailable(
            "the PKCS#11 key manager needs HALLMARK_PKCS11_PIN_SECRET or "
            "HALLMARK_PKCS11_PIN_SECRET_FILE"
        )
    path = Path(secret_file)
    if not path.exists() and generate:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process won the race; read its secret
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise KeyManagerUnavailable(
            f"cannot read the PKCS#11 PIN secret file {path} ({exc.strerror}); check "
            "HALLMARK_PKCS11_PIN_SECRET_FILE"
        ) from exc
    if not value:
        raise KeyManagerUnavailable(f"the PKCS#11 PIN secret file {path} is empty")
    return value.encode()


def prepare_softhsm_conf(conf: str) -> None:
    """Write a SoftHSM2 config with its own token dir beside `conf` (if missing); export it."""
    path = Path(conf)
    if not path.exists():
        tokendir = path.parent / "tokens"
        tokendir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(SOFTHSM2_CONF.format(tokendir=tokendir))
    # The module reads SOFTHSM2_CONF when it is initialised; children inherit it.
    os.environ["SOFTHSM2_CONF"] = str(path)


def _describe(exc: Exception, module: str, label: str, action: str) -> KeyManagerUnavailable:
    """Translate a PKCS#11 failure into a named error that says what to check."""
    where = f"PKCS#11 token {label!r} (module {module})"
    if isinstance(exc, ModuleFailure):
        return KeyManagerUnavailable(
            f"{exc}; cannot {action}. Check HALLMARK_PKCS11_MODULE, that the HSM software is "
            "installed (Debian: softhsm2) and SOFTHSM2_CONF"
        )
    if isinstance(exc, TokenMissing):
        return KeyManagerUnavailable(
            f"no {where} exists, so Hallmark cannot {action}; check SOFTHSM2_CONF (its "
            "tokendir) or the HSM, and that the tenant has keys in this key manager"
        )
    if isinstance(exc, pkcs11.PinIncorrect | pkcs11.PinLocked | pkcs11.PinExpired):
        return KeyAccessDenied(
            f"{where} refused the PIN used to {action} ({type(exc).__name__}); check "
            "HALLMARK_PKCS11_PIN_SECRET(_FILE) is the secret the token was created with"
        )
    if isinstance(exc, TimeoutError):
        return KeyManagerUnavailable(f"{where}: {exc} while trying to {action}; it is overloaded")
    return KeyManagerUnavailable(
        f"{where} failed to {action} ({type(exc).__name__}: {exc}); check the HSM and its logs"
    )


class Pkcs11KeyManager:
    """Keys on PKCS#11 tokens, one token and one PIN per tenant."""

    name: ClassVar[str] = "pkcs11"

    def __init__(
        self,
        *,
        module: str = DEFAULT_MODULE,
        pin_secret: bytes,
        max_sessions: int = 4,
        token_lock_file: str | None = None,
    ) -> None:
        self.module = module
        self._secret = pin_secret
        self._max_sessions = max_sessions
        self._token_lock_file = token_lock_file
        self._library = library_for(module)
        self._pins: dict[tuple[uuid.UUID, str], str] = {}
        self._rescanned: dict[str, float] = {}  # token label -> when it was last looked for

    @classmethod
    def from_settings(cls) -> Pkcs11KeyManager:
        from django.conf import settings

        if settings.PKCS11_SOFTHSM2_CONF:
            prepare_softhsm_conf(settings.PKCS11_SOFTHSM2_CONF)
        secret = load_pin_secret(
            settings.PKCS11_PIN_SECRET,
            settings.PKCS11_PIN_SECRET_FILE,
            generate=settings.EMBEDDED,
        )
        return cls(
            module=settings.PKCS11_MODULE,
            pin_secret=secret,
            max_sessions=settings.PKCS11_SESSIONS_PER_TOKEN,
            token_lock_file=settings.PKCS11_TOKEN_LOCK_FILE,
        )

    # -- KeyManager ------------------------------------------------------------------------
    @observed("create_key")
    def create_key(self, *, tenant_id: uuid.UUID, purpose: str) -> str:
        name = key_name(tenant_id, purpose)
        self._as_tenant(tenant_id, "generate a key", lambda s: _generate(s, name), create=True)
        return name

    def signer(self, key_ref: str, *, tenant_id: uuid.UUID | None = None) -> ManagedKeySigner:
        return ManagedKeySigner(self, key_ref, tenant_id or tenant_of_key(key_ref))

    @observed("delete_keys")
    def delete_keys(self, *, tenant_id: uuid.UUID) -> None:
        label = token_label(tenant_id)
        try:
            with self._library.token_init_lock(self._token_lock_file):
                self._library.reload()  # the token may have been made by another process
                self._library.wipe_token(
                    label,
                    so_pin=self._pin(tenant_id, "so"),
                    user_pin=self._pin(tenant_id, "user"),
                    new_label=DELETED_LABEL,
                )
        except (ModuleFailure, pkcs11.PKCS11Error) as exc:
            raise _describe(exc, self.module, label, "delete the tenant's keys") from exc

    @observed("delete_key")
    def delete_key(self, key_ref: str) -> None:
        def destroy(pooled: PooledSession) -> None:
            for found in list(pooled.session.get_objects({Attribute.LABEL: key_ref})):
                found.destroy()
            pooled.private_keys.pop(key_ref, None)

        self._as_tenant(tenant_of_key(key_ref), "delete a key", destroy)

    # -- signing -----------------------------------------------------------------------------
    @observed("public_key")
    def public_key(self, key_ref: str, tenant_id: uuid.UUID) -> ec.EllipticCurvePublicKey:
        def read(pooled: PooledSession) -> ec.EllipticCurvePublicKey:
            public = pooled.session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=key_ref)
            key = serialization.load_der_public_key(encode_ec_public_key(public))
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise KeyManagerUnavailable(f"PKCS#11 key {key_ref} is not an EC key")
            return key

        return self._with_key(key_ref, tenant_id, "read a public key", read)

    @observed("sign")
    def sign_digests(
        self, key_ref: str, tenant_id: uuid.UUID, digests: Sequence[bytes]
    ) -> list[bytes]:
        def sign(pooled: PooledSession) -> list[bytes]:
            key = pooled.private_key(key_ref)
            return [_der(key.sign(d, mechanism=Mechanism.ECDSA)) for d in digests]

        return self._with_key(key_ref, tenant_id, "sign", sign)

    @contextmanager
    def session(self, tenant_id: uuid.UUID) -> Iterator[PooledSession]:
        """A logged-in session on the tenant's token (administration and tests)."""
        with self._library.session(
            token_label(tenant_id), self._pin(tenant_id, "user"), self._max_sessions
        ) as pooled:
            yield pooled

    def close_sessions(self) -> None:
        """Log out of every token and close the sessions of this process (shutdown, tests)."""
        self._library.close_sessions()

    # -- plumbing ----------------------------------------------------------------------------
    def _pin(self, tenant_id: uuid.UUID, role: str) -> str:
        pin = self._pins.get((tenant_id, role))
        if pin is None:
            pin = self._pins[(tenant_id, role)] = derive_pin(self._secret, tenant_id, role)
        return pin

    def _with_key(
        self,
        key_ref: str,
        tenant_id: uuid.UUID,
        action: str,
        call: Callable[[PooledSession], T],
    ) -> T:
        try:
            return self._as_tenant(tenant_id, action, call)
        except KeyManagerUnavailable as exc:
            if isinstance(exc.__cause__, pkcs11.NoSuchKey):
                if _owner(key_ref) != tenant_id:
                    raise KeyAccessDenied(
                        f"key {key_ref} is not on the token of tenant {tenant_id}; a tenant's "
                        "credential opens only its own token"
                    ) from exc
                raise KeyManagerUnavailable(
                    f"PKCS#11 token {token_label(tenant_id)!r} has no key {key_ref} (deleted?)"
                ) from exc
            raise

    def _as_tenant(
        self,
        tenant_id: uuid.UUID,
        action: str,
        call: Callable[[PooledSession], T],
        *,
        create: bool = False,
    ) -> T:
        """Run `call` in a session on the tenant's token, finding (or creating) the token."""
        label = token_label(tenant_id)
        try:
            try:
                return self._call(tenant_id, call)
            except TokenMissing:
                with self._library.token_init_lock(self._token_lock_file):
                    # Made by another process since this one loaded the module? A re-scan
                    # drops every session, so a token that stays missing is re-scanned for
                    # at most every RELOAD_INTERVAL seconds.
                    last = self._rescanned.get(label, -RELOAD_INTERVAL)
                    if create or time.monotonic() - last >= RELOAD_INTERVAL:
                        self._library.reload()
                        self._rescanned[label] = time.monotonic()
                    if create:
                        self._create_token_if_missing(tenant_id)
            return self._call(tenant_id, call)
        except KeyManagerUnavailable:
            raise
        except (ModuleFailure, TokenMissing, TimeoutError, pkcs11.PKCS11Error) as exc:
            raise _describe(exc, self.module, label, action) from exc

    def _call(self, tenant_id: uuid.UUID, call: Callable[[PooledSession], T]) -> T:
        with self.session(tenant_id) as pooled:
            return call(pooled)

    def _create_token_if_missing(self, tenant_id: uuid.UUID) -> None:
        label = token_label(tenant_id)
        try:
            self._library.find_token(label)
        except TokenMissing:
            self._library.create_token(
                label, so_pin=self._pin(tenant_id, "so"), user_pin=self._pin(tenant_id, "user")
            )


def _owner(key_ref: str) -> uuid.UUID | None:
    try:
        return tenant_of_key(key_ref)
    except ValueError:
        return None


def _generate(pooled: PooledSession, name: str) -> None:
    """A P-256 pair generated on the token: private half sensitive and never extractable."""
    parameters = pooled.session.create_domain_parameters(
        KeyType.EC,
        {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
        local=True,
    )
    common: dict[Attribute, Any] = {Attribute.TOKEN: True, Attribute.LABEL: name}
    parameters.generate_keypair(
        store=True,
        label=name,
        id=name.encode(),
        public_template={**common, Attribute.VERIFY: True},
        private_template={
            **common,
            Attribute.PRIVATE: True,
            Attribute.SIGN: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
        },
    )


def _der(raw: bytes) -> bytes:
    """PKCS#11 ECDSA signatures are r||s; X.509 and JOSE code here wants DER."""
    if len(raw) != 2 * SIGNATURE_HALF:
        raise KeyManagerUnavailable(f"unexpected PKCS#11 ECDSA signature length {len(raw)}")
    r = int.from_bytes(raw[:SIGNATURE_HALF], "big")
    s = int.from_bytes(raw[SIGNATURE_HALF:], "big")
    return encode_dss_signature(r, s)
