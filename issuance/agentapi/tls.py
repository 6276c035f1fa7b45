"""Per-tenant TLS for the agent API: SNI (= trust domain) picks the tenant's server SVID.

Each tenant's context presents `spiffe://<td>/spire/server` (DNS SAN `<td>`) signed by the
tenant's CA and trusts only that tenant's X.509 authorities for client certificates, so an
agent SVID of another tenant fails the handshake. The server key exists only in this
process's memory (handed to OpenSSL through an anonymous memfd, never a file on disk). The
SVID is renewed at half-life, and at once when the authority that signed it is tainted or
leaves the bundle (revoked, pruned). The trusted authorities are re-read every few seconds and
on each of the tenant's bundle change events, in the background; only the first connection
for a tenant waits for its credentials.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import close_old_connections, connection

from hallmark.errors import HallmarkError, InvalidTrustDomain
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import LeafRequest, utcnow
from issuance.agentapi.scoped import OrmThreads
from tenants.events import ChangeEvent

log = logging.getLogger(__name__)
SERVER_PATH = "/spire/server"
ALPN = ["h2"]
ROOTS_REFRESH_SECONDS = 10.0
UNKNOWN_NAME_CACHE_SECONDS = 10.0
MAX_UNKNOWN_NAMES = 10_000
BUILD_TIMEOUT_SECONDS = 20.0


class TenantSSLContext(ssl.SSLContext):
    """A server context bound to one tenant; the relay reads the tenant back from it."""

    tenant_id: uuid.UUID
    trust_domain: str


@dataclass
class _Credentials:
    tenant_id: uuid.UUID
    trust_domain: str
    certificate_pem: bytes
    key_pem: bytes
    roots_pem: bytes
    issuer_der: bytes  # the trust domain's X.509 authority that signed the server SVID
    renew_at: dt.datetime
    not_after: dt.datetime
    context: TenantSSLContext
    roots_checked: float


def base_context() -> ssl.SSLContext:
    """The listening context: no certificate of its own; the SNI callback picks a tenant's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    return context


def _harden(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Requested, not required: AttestAgent comes before the agent has an SVID.
    context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(ALPN)


def _tenant_context(
    tenant_id: uuid.UUID, trust_domain: str, chain_pem: bytes, key_pem: bytes, roots_pem: bytes
) -> TenantSSLContext:
    context = TenantSSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    context.tenant_id = tenant_id
    context.trust_domain = trust_domain
    fd = os.memfd_create("hallmark-agentapi-svid", os.MFD_CLOEXEC)
    try:
        os.write(fd, chain_pem + key_pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    context.load_verify_locations(cadata=roots_pem.decode())
    return context


def _issue(trust_domain_name: str) -> _Credentials | None:
    """Look the tenant up and sign a fresh server SVID for it (worker thread, sync ORM)."""
    from tenants.scoping import get_tenant_by_trust_domain, tenant_schema
    from trustdomains import services as trustdomain_services

    close_old_connections()
    try:
        tenant = get_tenant_by_trust_domain(trust_domain_name)
        if tenant is None:
            return None
        trust_domain = TrustDomain(tenant.trust_domain)
        key = ec.generate_private_key(ec.SECP256R1())
        request = LeafRequest(
            spiffe_id=trust_domain.spiffe_id(SERVER_PATH),
            public_key=key.public_key(),
            ttl=dt.timedelta(seconds=settings.X509_SVID_TTL_SECONDS),
            dns_names=(trust_domain.name,),
        )
        with tenant_schema(tenant):
            chain = trustdomain_services.sign_x509_svids([request])[0]
            roots_pem = trustdomain_services.current_bundle().x509_pem()
            published = trustdomain_services.published_x509_authorities(
                trustdomain_services.get_trust_domain()
            )
    finally:
        connection.set_schema_to_public()
    leaf = chain[0]
    issuer_der = _issuer_der(leaf, [bytes(a.certificate_der) for a in published])
    if not issuer_der:
        log.warning(
            "agent API: no published authority of %s signed its server SVID", trust_domain_name
        )
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    return _Credentials(
        tenant_id=tenant.id,
        trust_domain=trust_domain.name,
        certificate_pem=chain_pem,
        key_pem=key_pem,
        roots_pem=roots_pem,
        issuer_der=issuer_der,
        renew_at=not_before + (not_after - not_before) / 2,
        not_after=not_after,
        context=_tenant_context(tenant.id, trust_domain.name, chain_pem, key_pem, roots_pem),
        roots_checked=time.monotonic(),
    )


def _issuer_der(leaf: x509.Certificate, authorities_der: list[bytes]) -> bytes:
    """The DER of the authority that signed `leaf` (b"" if none of them did)."""
    for der in authorities_der:
        try:
            leaf.verify_directly_issued_by(x509.load_der_x509_certificate(der))
        except (ValueError, TypeError, InvalidSignature):
            continue
        return der
    return b""


def _refresh(credentials: _Credentials) -> _Credentials | None:
    """Re-read the tenant's authorities: a new SVID if its issuer is tainted or unpublished,
    else a new context only if the trusted authorities changed."""
    from tenants.scoping import get_tenant, tenant_schema
    from trustdomains import services as trustdomain_services

    close_old_connections()
    try:
        tenant = get_tenant(credentials.tenant_id)
        with tenant_schema(tenant):
            roots_pem = trustdomain_services.current_bundle().x509_pem()
            issuer = next(
                (
                    a
                    for a in trustdomain_services.published_x509_authorities(
                        trustdomain_services.get_trust_domain()
                    )
                    if bytes(a.certificate_der) == credentials.issuer_der
                ),
                None,
            )
    finally:
        connection.set_schema_to_public()
    # An issuer not identified at issue time (b"") is left to the half-life renewal: checking
    # it would re-issue on every refresh.
    if credentials.issuer_der and (issuer is None or issuer.tainted):
        why = "is tainted" if issuer is not None else "is no longer published"
        log.info(
            "agent API: the authority of %s's server SVID %s; issuing a new one",
            credentials.trust_domain,
            why,
        )
        return _issue(credentials.trust_domain)
    if roots_pem == credentials.roots_pem:
        credentials.roots_checked = time.monotonic()
        return credentials
    return _Credentials(
        **{
            **credentials.__dict__,
            "roots_pem": roots_pem,
            "roots_checked": time.monotonic(),
            "context": _tenant_context(
                credentials.tenant_id,
                credentials.trust_domain,
                credentials.certificate_pem,
                credentials.key_pem,
                roots_pem,
            ),
        }
    )


class TenantCredentials:
    """The cache of per-tenant server contexts and the SNI callback that uses it."""

    def __init__(self, workers: int = 4) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, _Credentials] = {}
        self._unknown: dict[str, float] = {}
        self._pending: set[str] = set()
        self._again: set[str] = set()  # changed while a refresh was running: refresh again
        self._threads = OrmThreads(workers, "agentapi-tls")

    def close(self) -> None:
        self._threads.close()

    def sni_callback(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        """Switch the handshake to the tenant named by SNI; unknown names fail the handshake."""
        try:
            context = self.context_for(server_name or "")
        except Exception:
            log.exception("agent API: no TLS credentials for %r", server_name)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        if context is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ssl_object.context = context
        return None

    def context_for(self, server_name: str) -> TenantSSLContext | None:
        """The tenant's context, building it (blocking) only when there is none usable."""
        name = server_name.lower()
        try:
            TrustDomain(name)
        except InvalidTrustDomain:
            return None
        now = utcnow()
        with self._lock:
            cached = self._cache.get(name)
            unknown_until = self._unknown.get(name, 0.0)
        if cached is not None and now < cached.not_after - dt.timedelta(seconds=30):
            if now >= cached.renew_at:
                self._background(name, lambda: _issue(name))
            elif time.monotonic() - cached.roots_checked > ROOTS_REFRESH_SECONDS:
                self._background(name, lambda: _refresh(cached))
            return cached.context
        if time.monotonic() < unknown_until:
            return None
        fresh = self._threads.submit(_issue, name).result(timeout=BUILD_TIMEOUT_SECONDS)
        self._store(name, fresh)
        return fresh.context if fresh is not None else None

    def bundle_changed(self, event: ChangeEvent) -> None:
        """A tenant's bundle changed (rotation, taint, revoke): refresh its credentials now.

        Called on the event loop for every tenant's events; it only queues work.
        """
        if event.kind != "bundle":
            return
        with self._lock:
            names = [n for n, c in self._cache.items() if c.tenant_id == event.tenant_id]
        for name in names:
            self._background(name, self._refresh_cached(name))

    def _refresh_cached(self, name: str) -> Callable[[], _Credentials | None]:
        def build() -> _Credentials | None:
            with self._lock:
                cached = self._cache.get(name)
            return _refresh(cached) if cached is not None else _issue(name)

        return build

    def _store(self, name: str, credentials: _Credentials | None) -> None:
        with self._lock:
            if credentials is None:
                if len(self._unknown) >= MAX_UNKNOWN_NAMES:
                    self._unknown.clear()
                self._unknown[name] = time.monotonic() + UNKNOWN_NAME_CACHE_SECONDS
                self._cache.pop(name, None)
            else:
                self._unknown.pop(name, None)
                self._cache[name] = credentials

    def _background(self, name: str, build: Callable[[], _Credentials | None]) -> None:
        with self._lock:
            if name in self._pending:
                # The running refresh may have read the database before this change.
                self._again.add(name)
                return
            self._pending.add(name)

        def run() -> None:
            try:
                self._store(name, build())
            except HallmarkError as exc:
                log.warning("agent API: refreshing TLS credentials of %s: %s", name, exc.detail)
            except Exception:
                log.exception("agent API: refreshing TLS credentials of %s failed", name)
            finally:
                with self._lock:
                    self._pending.discard(name)
                    again = name in self._again
                    self._again.discard(name)
            if again:
                self._background(name, self._refresh_cached(name))

        self._threads.submit(run)
