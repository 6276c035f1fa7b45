"""Per-tenant node attestor configuration, and what the attestors' server halves may look up."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import urllib.parse
import uuid
from collections.abc import Mapping
from http.client import HTTPException, HTTPSConnection
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction

from attestors.node import catalog
from attestors.node.base import (
    HttpAnswer,
    InvalidAttestorConfig,
    JoinTokenGrant,
    NodeAttestationFailed,
    ServerAttestor,
)
from issuance.errors import AttestationDenied, InvalidAttestationRequest
from issuance.models import JoinToken, NodeAttestor
from issuance.services import join_tokens
from tenants.services import record_audit

if TYPE_CHECKING:
    from tenants.models import Tenant

# Tenant-configured URLs (JWKS, TokenReview) are fetched by the platform: loopback, private
# and link-local targets are refused unless their network is listed here (CIDRs, commas).
ALLOWED_NETWORKS_ENV = "HALLMARK_NODE_ATTESTOR_ALLOWED_NETWORKS"
HTTP_TIMEOUT_SECONDS = 5.0
MAX_HTTP_BODY = 1024 * 1024


class NodeAttestorNotFound(InvalidAttestorConfig):
    code = "not_found"
    http_status = 404


class NodeAttestorExists(InvalidAttestorConfig):
    code = "node_attestor_exists"
    http_status = 409


def _validated(attestation_type: Any, config: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(attestation_type, str) or not attestation_type:
        raise InvalidAttestorConfig("type is required", code="invalid_type")
    if attestation_type not in catalog.CONFIGURABLE_TYPES:
        if attestation_type in catalog.ALWAYS_ON:
            catalog.validate_config(attestation_type, {})
        raise InvalidAttestorConfig(
            f"type must be one of {', '.join(catalog.CONFIGURABLE_TYPES)}", code="invalid_type"
        )
    if attestation_type not in catalog.SERVER_ATTESTORS:
        raise InvalidAttestorConfig(
            f"node attestor {attestation_type!r} is not available on this platform yet",
            code="unsupported_attestation_type",
        )
    if not isinstance(config, Mapping):
        raise InvalidAttestorConfig("config must be a JSON object", code="invalid_config")
    return attestation_type, catalog.validate_config(attestation_type, config)


def list_node_attestors() -> list[NodeAttestor]:
    return list(NodeAttestor.objects.all())


def get_node_attestor(attestor_id: uuid.UUID | str) -> NodeAttestor:
    try:
        return NodeAttestor.objects.get(pk=uuid.UUID(str(attestor_id)))
    except (ValueError, NodeAttestor.DoesNotExist):
        raise NodeAttestorNotFound("no such node attestor", code="not_found") from None


def create_node_attestor(
    *, tenant: Tenant, actor: str, attestation_type: Any, config: Any, source: str = ""
) -> NodeAttestor:
    kind, settings = _validated(attestation_type, config)
    try:
        with transaction.atomic():
            attestor = NodeAttestor.objects.create(type=kind, config=settings)
            record_audit(
                tenant=tenant,
                actor=actor,
                action="node_attestor.create",
                target=str(attestor.id),
                source=source,
                detail={"type": kind},
            )
    except IntegrityError:
        raise NodeAttestorExists(
            f"a {kind} node attestor is already configured; PATCH it", code="node_attestor_exists"
        ) from None
    return attestor


def update_node_attestor(
    *, tenant: Tenant, actor: str, attestor_id: uuid.UUID | str, config: Any, source: str = ""
) -> NodeAttestor:
    with transaction.atomic():
        attestor = get_node_attestor(attestor_id)
        attestor = NodeAttestor.objects.select_for_update().get(pk=attestor.pk)
        _, attestor.config = _validated(attestor.type, config)
        attestor.save(update_fields=["config", "updated_at"])
        record_audit(
            tenant=tenant,
            actor=actor,
            action="node_attestor.update",
            target=str(attestor.id),
            source=source,
            detail={"type": attestor.type},
        )
    return attestor


def delete_node_attestor(
    *, tenant: Tenant, actor: str, attestor_id: uuid.UUID | str, source: str = ""
) -> None:
    with transaction.atomic():
        attestor = get_node_attestor(attestor_id)
        attestor.delete()
        record_audit(
            tenant=tenant,
            actor=actor,
            action="node_attestor.delete",
            target=str(attestor_id),
            source=source,
            detail={"type": attestor.type},
        )


def server_attestor(attestation_type: str, *, trust_domain: str) -> ServerAttestor:
    """The server half for this tenant (the current schema), or AttestationDenied."""
    if attestation_type in catalog.ALWAYS_ON:
        return catalog.server_attestor_class(attestation_type)({}, trust_domain=trust_domain)
    if attestation_type not in catalog.SERVER_ATTESTORS:
        raise InvalidAttestationRequest(
            f"attestation type {attestation_type[:64]!r} is not supported; available: "
            f"{', '.join(sorted(catalog.SERVER_ATTESTORS))}",
            code="unsupported_attestation_type",
        )
    row = NodeAttestor.objects.filter(type=attestation_type).first()
    if row is None:
        raise AttestationDenied(
            f"this trust domain has no {attestation_type} node attestor configured",
            code="attestor_not_configured",
        )
    return catalog.server_attestor_class(attestation_type)(row.config, trust_domain=trust_domain)


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    text = os.environ.get(ALLOWED_NETWORKS_ENV, "")
    return [ipaddress.ip_network(n.strip(), strict=False) for n in text.split(",") if n.strip()]


def _check_address(address: str) -> None:
    ip = ipaddress.ip_address(address)
    if ip.is_global:
        return
    if any(ip in network for network in _allowed_networks()):
        return
    raise NodeAttestationFailed(
        f"{address} is not a public address (allow its network in {ALLOWED_NETWORKS_ENV})",
        code="attestor_unreachable",
    )


class _PinnedHTTPSConnection(HTTPSConnection):
    """Connects to the address that was checked, not to whatever DNS answers next."""

    def __init__(self, host: str, port: int, address: str, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(  # type: ignore[attr-defined]
            self.sock, server_hostname=self.host
        )


class TenantLookup:
    """The NodeLookup of one attestation in the current tenant's schema."""

    def __init__(self) -> None:
        self.join_token: JoinToken | None = None

    def redeem_join_token(self, secret: str) -> JoinTokenGrant:
        self.join_token = join_tokens.redeem(secret)
        return JoinTokenGrant(str(self.join_token.id), self.join_token.spiffe_id)

    def https(  # noqa: PLR0913
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        ca_bundle_pem: str | None = None,
    ) -> HttpAnswer:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise NodeAttestationFailed(f"{url} is not an https URL", code="attestor_unreachable")
        port = parts.port or 443
        try:
            address = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)[0][4][0]
            _check_address(str(address))
            context = ssl.create_default_context(cadata=ca_bundle_pem or None)
            connection = _PinnedHTTPSConnection(
                parts.hostname, port, str(address), timeout=HTTP_TIMEOUT_SECONDS, context=context
            )
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            try:
                connection.request(method, path, body=body, headers=dict(headers or {}))
                answer = connection.getresponse()
                data = answer.read(MAX_HTTP_BODY + 1)
            finally:
                connection.close()
        except (OSError, HTTPException, ssl.SSLError, ValueError) as exc:
            raise NodeAttestationFailed(
                f"{parts.hostname}: {type(exc).__name__}: {exc}"[:300], code="attestor_unreachable"
            ) from None
        if len(data) > MAX_HTTP_BODY:
            raise NodeAttestationFailed(f"{url} answered too much", code="attestor_unreachable")
        return HttpAnswer(status=answer.status, body=data)
