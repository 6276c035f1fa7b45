"""Join-token node attestation: the agent proves itself with a single-use secret token.

The agent sends `{"token": ...}`; the server half redeems the token through the lookup (the
token store belongs to the tenant's records). The agent's ID is SPIRE's
`spiffe://<td>/spire/agent/join_token/<token id>`; the token cannot be used again, so a
join-token agent cannot re-attest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from attestors.node.base import (
    AgentAttestor,
    AttestedNode,
    InvalidAttestationPayload,
    NodeLookup,
    ServerAttestor,
    require_keys,
)

ATTESTATION_TYPE = "join_token"
MAX_TOKEN_LENGTH = 512


class InvalidAttestationData(InvalidAttestationPayload):
    """Attestation data that is not `{"token": "<non-empty string>"}`."""

    code = "invalid_attestation_data"


def attestation_data(token: str) -> bytes:
    """The AttestAgent `attestation_data` for a join token: JSON `{"token": ...}`."""
    token = token.strip()
    if not token:
        raise InvalidAttestationData("join token is empty")
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidAttestationData(f"join token is longer than {MAX_TOKEN_LENGTH} characters")
    return json.dumps({"token": token}, separators=(",", ":")).encode()


def parse_attestation_data(data: bytes) -> str:
    """The secret token in join-token attestation data; InvalidAttestationData when malformed."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidAttestationData("join_token attestation data is not JSON") from None
    token = document.get("token") if isinstance(document, dict) else None
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidAttestationData(
            'join_token attestation data must be {"token": "<the join token>"}'
        )
    return token


class JoinTokenServer(ServerAttestor):
    """Redeems the token; always on, with no settings."""

    type = ATTESTATION_TYPE
    can_reattest = False

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        require_keys(config, known=set())
        return {}

    def attest(
        self,
        payload: bytes,
        *,
        challenge: bytes | None,
        response: bytes | None,
        lookup: NodeLookup,
    ) -> AttestedNode:
        grant = lookup.redeem_join_token(parse_attestation_data(payload))
        return AttestedNode(
            agent_path=f"join_token/{grant.token_id}",
            can_reattest=False,
            node_aliases=(grant.alias,) if grant.alias else (),
            detail={"join_token": grant.token_id},
        )


class JoinTokenAgent(AgentAttestor):
    """The agent half: the token from the configuration."""

    type = ATTESTATION_TYPE
    can_reattest = False

    def __init__(self, token: str) -> None:
        self.token = token

    def payload(self) -> bytes:
        return attestation_data(self.token)
