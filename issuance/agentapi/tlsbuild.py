"""Per-tenant TLS credentials of the agent API: build and refresh them (worker threads).

Each tenant's context presents `spiffe://<td>/spire/server` (DNS SAN `<td>`) signed by the
tenant's CA and trusts only that tenant's X.509 authorities for client certificates, so an
agent SVID of another tenant fails the handshake. The server key exists only in this
process's memory (handed to OpenSSL through an anonymous memfd, never a file on disk).
Everything here runs on worker threads with the ORM; `issuance.agentapi.tls` decides when.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
import time
import uuid
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import close_old_connections, connection

from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import LeafRequest, utcnow

log = logging.getLogger(__name__)
SERVER_PATH = "/spire/server"
ALPN = ["h2"]
# The credentials' use: the agent API (gRPC, client SVIDs requested) or the https_spiffe
# bundle endpoint (HTTP/1.1, no client authentication: SPIFFE_Federation.md 5.2.2.2).
AGENT_API = "agent_api"
BUNDLE_ENDPOINT = "bundle_endpoint"


class TenantSSLContext(ssl.SSLContext):
    """A server context bound to one tenant; the relay reads the tenant back from it."""

    tenant_id: uuid.UUID
    trust_domain: str


@dataclass
class Credentials:
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
    profile: str = AGENT_API


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


def tenant_context(
    tenant_id: uuid.UUID,
    trust_domain: str,
    chain_pem: bytes,
    key_pem: bytes,
    roots_pem: bytes,
    *,
    profile: str = AGENT_API,
) -> TenantSSLContext:
    context = TenantSSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    if profile == BUNDLE_ENDPOINT:
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])
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


def tenant_directory() -> dict[str, uuid.UUID]:
    """Every tenant's trust domain name and id (one query of the public schema)."""
    from tenants.models import Tenant
    from tenants.scoping import public_schema

    close_old_connections()
    with public_schema():
        return {name: pk for name, pk in Tenant.objects.values_list("trust_domain", "id")}


def lookup_tenant(
    *, trust_domain: str | None = None, tenant_id: uuid.UUID | None = None
) -> tuple[str, uuid.UUID] | None:
    """The (trust domain, id) of the tenant with that name or id, None if there is none."""
    from tenants.models import Tenant
    from tenants.scoping import public_schema

    close_old_connections()
    with public_schema():
        rows = Tenant.objects.filter(
            **({"trust_domain": trust_domain} if trust_domain else {"pk": tenant_id})
        ).values_list("trust_domain", "id")[:1]
        return next(iter(rows), None)


def issue(tenant_id: uuid.UUID, profile: str = AGENT_API) -> Credentials | None:
    """Sign a fresh server SVID for the tenant (None when it no longer exists)."""
    from tenants.models import Tenant
    from tenants.scoping import get_tenant, tenant_schema
    from trustdomains import services as trustdomain_services

    close_old_connections()
    try:
        try:
            tenant = get_tenant(tenant_id)
        except Tenant.DoesNotExist:
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
            "agent API: no published authority of %s signed its server SVID", trust_domain.name
        )
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    return Credentials(
        tenant_id=tenant.id,
        trust_domain=trust_domain.name,
        certificate_pem=chain_pem,
        key_pem=key_pem,
        roots_pem=roots_pem,
        issuer_der=issuer_der,
        renew_at=not_before + (not_after - not_before) / 2,
        not_after=not_after,
        context=tenant_context(
            tenant.id, trust_domain.name, chain_pem, key_pem, roots_pem, profile=profile
        ),
        roots_checked=time.monotonic(),
        profile=profile,
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


def refresh(credentials: Credentials) -> Credentials | None:
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
    # Past half-life, a bundle change (a CA activated, say) renews the server SVID now rather
    # than waiting for a handshake to notice: its life ends with its CA's, and the first
    # handshake after that would otherwise find it expired.
    if utcnow() >= credentials.renew_at:
        return issue(credentials.tenant_id, credentials.profile)
    # An issuer not identified at issue time (b"") is left to the half-life renewal: checking
    # it would re-issue on every refresh.
    if credentials.issuer_der and (issuer is None or issuer.tainted):
        why = "is tainted" if issuer is not None else "is no longer published"
        log.info(
            "agent API: the authority of %s's server SVID %s; issuing a new one",
            credentials.trust_domain,
            why,
        )
        return issue(credentials.tenant_id, credentials.profile)
    if roots_pem == credentials.roots_pem:
        credentials.roots_checked = time.monotonic()
        return credentials
    return Credentials(
        **{
            **credentials.__dict__,
            "roots_pem": roots_pem,
            "roots_checked": time.monotonic(),
            "context": tenant_context(
                credentials.tenant_id,
                credentials.trust_domain,
                credentials.certificate_pem,
                credentials.key_pem,
                roots_pem,
                profile=credentials.profile,
            ),
        }
    )
