"""azure_msi: the node proves itself with a managed-identity access token of its VM.

Agent: `GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&
resource=<resource_id>` with `Metadata: true` (Azure IMDS), sent as `{"token": ...}`.
Server (SPIRE's `tenants` setting): the token's `tid` must be an allowed Azure AD tenant; it
must verify with that tenant's published keys (`jwks` inline or `jwks_url`, by default
`https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys`), issuer
`https://sts.windows.net/<tenant>/`, audience the tenant's `resource_id` (SPIRE's default
`https://management.azure.com/`), times with clock skew. Agent ID: SPIRE's
`azure_msi/<tenant id>/<principal id>`; without Azure API credentials there are no
selectors beyond `azure_msi:tenant-id:` and `azure_msi:principal-id:`. A token attests once.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from attestors.node.base import (
    AgentAttestor,
    AttestedNode,
    InvalidAttestorConfig,
    NodeAttestationFailed,
    NodeLookup,
    ServerAttestor,
    require_keys,
)
from attestors.node.jwtproof import expiry, proof_id, token_payload, unverified_claims, verify_jwt

ATTESTATION_TYPE = "azure_msi"
DEFAULT_RESOURCE = "https://management.azure.com/"
DEFAULT_IMDS = "http://169.254.169.254"
_GUID = re.compile(r"^[0-9a-fA-F-]{36}$")


def _tenant(name: str, value: Any) -> dict[str, Any]:
    if not _GUID.match(name):
        raise InvalidAttestorConfig(
            f"tenants: {name!r} is not an Azure AD tenant ID (a GUID)", code="invalid_tenant_id"
        )
    if not isinstance(value, Mapping):
        raise InvalidAttestorConfig(f"tenants.{name} must be an object", code="invalid_setting")
    require_keys(value, known={"resource_id", "jwks", "jwks_url", "ca_bundle_pem"})
    settings: dict[str, Any] = {"resource_id": value.get("resource_id", DEFAULT_RESOURCE)}
    if "jwks" in value:
        if not isinstance(value["jwks"], Mapping) or not isinstance(
            value["jwks"].get("keys"), list
        ):
            raise InvalidAttestorConfig(f"tenants.{name}.jwks is not a JWKS", code="invalid_jwks")
        settings["jwks"] = dict(value["jwks"])
    else:
        url = value.get("jwks_url", f"https://login.microsoftonline.com/{name}/discovery/v2.0/keys")
        if not isinstance(url, str) or not url.startswith("https://"):
            raise InvalidAttestorConfig("jwks_url must be an https:// URL", code="invalid_url")
        settings["jwks_url"] = url
    if "ca_bundle_pem" in value:
        settings["ca_bundle_pem"] = str(value["ca_bundle_pem"])
    return settings


class AzureMsiServer(ServerAttestor):
    """Checks the managed-identity token against the allowed Azure AD tenants."""

    type = ATTESTATION_TYPE
    can_reattest = True

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        require_keys(config, known={"tenants"}, required=frozenset({"tenants"}))
        tenants = config["tenants"]
        if not isinstance(tenants, Mapping) or not tenants:
            raise InvalidAttestorConfig(
                "tenants must map Azure AD tenant IDs to their settings", code="invalid_setting"
            )
        return {"tenants": {str(k).lower(): _tenant(str(k), v) for k, v in tenants.items()}}

    def attest(
        self,
        payload: bytes,
        *,
        challenge: bytes | None,
        response: bytes | None,
        lookup: NodeLookup,
    ) -> AttestedNode:
        token = token_payload(payload, ATTESTATION_TYPE)
        unverified = unverified_claims(token)
        tenant_id = str(unverified.get("tid", "")).lower()
        settings = self.config["tenants"].get(tenant_id)
        if settings is None:
            raise NodeAttestationFailed(
                f"Azure AD tenant {tenant_id!r} is not allowed", code="tenant_not_allowed"
            )
        claims = verify_jwt(
            token,
            lookup=lookup,
            audience=[settings["resource_id"]],
            issuer=f"https://sts.windows.net/{tenant_id}/",
            jwks=settings.get("jwks"),
            jwks_url=settings.get("jwks_url"),
            ca_bundle_pem=settings.get("ca_bundle_pem", ""),
        )
        principal = str(claims.get("oid") or claims.get("sub") or "")
        if not _GUID.match(principal):
            raise NodeAttestationFailed("the token names no principal", code="invalid_token")
        return AttestedNode(
            agent_path=f"azure_msi/{tenant_id}/{principal}",
            selectors=(
                f"azure_msi:principal-id:{principal}",
                f"azure_msi:tenant-id:{tenant_id}",
            ),
            can_reattest=True,
            proof_id=proof_id(ATTESTATION_TYPE, token),
            proof_expires_at=expiry(claims),
            detail={"tenant_id": tenant_id, "principal_id": principal},
        )


class AzureMsiAgent(AgentAttestor):
    """The agent half: SPIRE's `resource_id`; the token comes from Azure IMDS each time."""

    type = ATTESTATION_TYPE
    can_reattest = True

    def __init__(self, resource_id: str = DEFAULT_RESOURCE, endpoint: str = DEFAULT_IMDS) -> None:
        self.resource_id, self.endpoint = resource_id, endpoint.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> AzureMsiAgent:
        return cls(
            str(settings.get("resource_id", DEFAULT_RESOURCE)),
            str(settings.get("imds_endpoint", DEFAULT_IMDS)),
        )

    def payload(self) -> bytes:
        query = urllib.parse.urlencode({"api-version": "2018-02-01", "resource": self.resource_id})
        request = urllib.request.Request(  # noqa: S310 - the configured IMDS endpoint
            f"{self.endpoint}/metadata/identity/oauth2/token?{query}",
            headers={"Metadata": "true"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            token = json.loads(answer.read()).get("access_token", "")
        return json.dumps({"token": token}).encode()
