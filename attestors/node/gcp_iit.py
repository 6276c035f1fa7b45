"""gcp_iit: the node proves itself with a Google-signed instance identity token (JWT).

Agent: `GET http://<identity_token_host>/computeMetadata/v1/instance/service-accounts/
<service_account>/identity?audience=<audience>&format=full` with `Metadata-Flavor: Google`,
sent as `{"token": ...}`. Server: the token verifies with Google's published keys (`jwks_url`,
by default Google's; or `jwks` inline), issuer `https://accounts.google.com`, the audience
(SPIRE's `spire-gcp-node-attestor` by default), times with clock skew, and the project
against `projectid_allow_list`. Agent ID: SPIRE's `gcp_iit/<project>/<instance id>`;
selectors from the token as SPIRE: `gcp_iit:project-id:`, `gcp_iit:zone:`,
`gcp_iit:instance-name:`. As in SPIRE an instance attests once (trust on first use), and a
token attests at most once.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from attestors.node import agentpath
from attestors.node.base import (
    AgentAttestor,
    AttestedNode,
    InvalidAttestorConfig,
    NodeAttestationFailed,
    NodeLookup,
    ServerAttestor,
    require_keys,
    string_list,
)
from attestors.node.jwtproof import expiry, proof_id, token_payload, verify_jwt

ATTESTATION_TYPE = "gcp_iit"
DEFAULT_AUDIENCE = "spire-gcp-node-attestor"
GOOGLE_ISSUER = "https://accounts.google.com"
GOOGLE_JWKS_URL = "https://www.googleapis.com/oauth2/v3/certs"
DEFAULT_AGENT_PATH_TEMPLATE = "{{ .PluginName }}/{{ .ProjectID }}/{{ .InstanceID }}"
DEFAULT_TOKEN_HOST = "metadata.google.internal"  # noqa: S105 - a host name
_TEMPLATE_FIELDS = {"PluginName", "ProjectID", "InstanceID", "InstanceName", "Zone"}


class GcpIitServer(ServerAttestor):
    """Checks the identity token and the project; one attestation per instance."""

    type = ATTESTATION_TYPE
    can_reattest = False

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        require_keys(
            config,
            known={
                "projectid_allow_list",
                "audience",
                "jwks",
                "jwks_url",
                "ca_bundle_pem",
                "agent_path_template",
            },
            required=frozenset({"projectid_allow_list"}),
        )
        projects = string_list(config, "projectid_allow_list")
        if not projects:
            raise InvalidAttestorConfig(
                "projectid_allow_list must name at least one project",
                code="invalid_projectid_allow_list",
            )
        settings: dict[str, Any] = {
            "projectid_allow_list": projects,
            "audience": config.get("audience", DEFAULT_AUDIENCE),
            "agent_path_template": config.get("agent_path_template", DEFAULT_AGENT_PATH_TEMPLATE),
        }
        if not isinstance(settings["audience"], str) or not settings["audience"]:
            raise InvalidAttestorConfig("audience must be a string", code="invalid_setting")
        agentpath.check_fields(settings["agent_path_template"], _TEMPLATE_FIELDS)
        if "jwks" in config:
            if not isinstance(config["jwks"], Mapping) or not isinstance(
                config["jwks"].get("keys"), list
            ):
                raise InvalidAttestorConfig("jwks must be a JWKS object", code="invalid_jwks")
            settings["jwks"] = dict(config["jwks"])
        else:
            url = config.get("jwks_url", GOOGLE_JWKS_URL)
            if not isinstance(url, str) or not url.startswith("https://"):
                raise InvalidAttestorConfig("jwks_url must be an https:// URL", code="invalid_url")
            settings["jwks_url"] = url
        if "ca_bundle_pem" in config:
            if not isinstance(config["ca_bundle_pem"], str):
                raise InvalidAttestorConfig("ca_bundle_pem must be PEM", code="invalid_setting")
            settings["ca_bundle_pem"] = config["ca_bundle_pem"]
        return settings

    def attest(
        self,
        payload: bytes,
        *,
        challenge: bytes | None,
        response: bytes | None,
        lookup: NodeLookup,
    ) -> AttestedNode:
        token = token_payload(payload, ATTESTATION_TYPE)
        claims = verify_jwt(
            token,
            lookup=lookup,
            audience=[self.config["audience"]],
            issuer=GOOGLE_ISSUER,
            jwks=self.config.get("jwks"),
            jwks_url=self.config.get("jwks_url"),
            ca_bundle_pem=self.config.get("ca_bundle_pem", ""),
        )
        google = claims.get("google")
        engine = google.get("compute_engine") if isinstance(google, dict) else None
        if not isinstance(engine, dict) or not all(
            isinstance(engine.get(k), str) and engine.get(k) for k in ("project_id", "instance_id")
        ):
            raise NodeAttestationFailed(
                "the token has no google.compute_engine claims (ask for format=full)",
                code="invalid_token",
            )
        project = engine["project_id"]
        if project not in self.config["projectid_allow_list"]:
            raise NodeAttestationFailed(
                f"project {project} is not in the project allow list",
                code="project_not_allowed",
            )
        values = {
            "PluginName": ATTESTATION_TYPE,
            "ProjectID": project,
            "InstanceID": engine["instance_id"],
            "InstanceName": str(engine.get("instance_name", "")),
            "Zone": str(engine.get("zone", "")),
        }
        path = agentpath.render(self.config["agent_path_template"], values)
        selectors = {f"gcp_iit:project-id:{project}"}
        if values["Zone"]:
            selectors.add(f"gcp_iit:zone:{values['Zone']}")
        if values["InstanceName"]:
            selectors.add(f"gcp_iit:instance-name:{values['InstanceName']}")
        return AttestedNode(
            agent_path=path,
            selectors=tuple(sorted(selectors)),
            can_reattest=False,
            proof_id=proof_id(ATTESTATION_TYPE, token),
            proof_expires_at=expiry(claims),
            detail={"project": project, "instance_id": engine["instance_id"]},
        )


class GcpIitAgent(AgentAttestor):
    """The agent half: SPIRE's `identity_token_host`, `service_account`, `audience`."""

    type = ATTESTATION_TYPE
    can_reattest = False

    def __init__(
        self,
        identity_token_host: str = DEFAULT_TOKEN_HOST,
        service_account: str = "default",
        audience: str = DEFAULT_AUDIENCE,
    ) -> None:
        self.host, self.service_account, self.audience = (
            identity_token_host,
            service_account,
            audience,
        )

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> GcpIitAgent:
        return cls(
            str(settings.get("identity_token_host", DEFAULT_TOKEN_HOST)),
            str(settings.get("service_account", "default")),
            str(settings.get("audience", DEFAULT_AUDIENCE)),
        )

    def payload(self) -> bytes:
        query = urllib.parse.urlencode({"audience": self.audience, "format": "full"})
        url = (
            f"http://{self.host}/computeMetadata/v1/instance/service-accounts/"
            f"{urllib.parse.quote(self.service_account)}/identity?{query}"
        )
        request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            token = answer.read().decode().strip()
        return json.dumps({"token": token}).encode()
