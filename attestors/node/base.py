"""The node attestor interface: an agent half that proves the node, a server half that checks.

Both halves are plain Python. The server half is built from one tenant's configuration (a
mapping, validated by `validate_config`) and is given a `NodeLookup` for what it needs from
the tenant's records; it never touches a database itself. Attestation is a conversation:
the agent sends a payload; the server half may answer with a challenge (`challenge`), which
the agent half answers (`respond`); then `attest` checks everything and returns the node.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from hallmark.errors import HallmarkError

# Tolerated difference between the clocks of the server and whoever signed a proof.
DEFAULT_CLOCK_SKEW = dt.timedelta(seconds=60)


class NodeAttestationFailed(HallmarkError):
    """The node's proof was refused; `code` names why (audited with the failure)."""

    code = "attestation_failed"
    http_status = 403


class InvalidAttestationPayload(HallmarkError):
    """The agent's payload or challenge response is malformed."""

    code = "invalid_attestation_data"
    http_status = 400


class InvalidAttestorConfig(HallmarkError):
    """A tenant's attestor configuration breaks the rules of its type."""

    code = "invalid_attestor_config"
    http_status = 400


@dataclass(frozen=True)
class JoinTokenGrant:
    """A redeemed join token: its id (the agent's path) and the node alias it carries."""

    token_id: str
    alias: str | None


@dataclass(frozen=True)
class HttpAnswer:
    """An HTTP answer as a server half sees it."""

    status: int
    body: bytes


class NodeLookup(Protocol):
    """What a server half may ask of the tenant's records and of the network."""

    def redeem_join_token(self, secret: str) -> JoinTokenGrant:
        """Consume a single-use join token, or raise NodeAttestationFailed."""
        ...

    def https(  # noqa: PLR0913 - one HTTPS request's parts
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        ca_bundle_pem: str | None = None,
    ) -> HttpAnswer:
        """An HTTPS request to a tenant-configured URL (the platform decides which networks
        are reachable); NodeAttestationFailed(`attestor_unreachable`) when it cannot be made."""
        ...


@dataclass(frozen=True)
class AttestedNode:
    """What a server half proved about a node.

    `agent_path` is the part of the agent's SPIFFE ID after `/spire/agent/` (SPIRE's format,
    e.g. `x509pop/<fingerprint>`). `proof_id`, when set, names a proof that must not attest
    twice (a token, a signed document) and `proof_expires_at` says how long to remember it.
    """

    agent_path: str
    selectors: tuple[str, ...] = ()
    can_reattest: bool = False
    node_aliases: tuple[str, ...] = ()
    proof_id: str | None = None
    proof_expires_at: dt.datetime | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ServerAttestor(ABC):
    """The server half of one node attestor type, for one tenant's configuration."""

    type: ClassVar[str]
    # Whether an attested agent may attest again under the same ID (SPIRE's re-attestation).
    can_reattest: ClassVar[bool] = True

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        trust_domain: str,
        now: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.config = self.validate_config(config)
        self.trust_domain = trust_domain
        self.now = now

    @classmethod
    @abstractmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The normalised configuration, or InvalidAttestorConfig with a stable code."""

    def challenge(self, payload: bytes) -> bytes | None:
        """A challenge for the agent half to answer, or None when the payload is the proof."""
        return None

    @abstractmethod
    def attest(
        self,
        payload: bytes,
        *,
        challenge: bytes | None,
        response: bytes | None,
        lookup: NodeLookup,
    ) -> AttestedNode:
        """Check the proof; NodeAttestationFailed (with a reason code) when it does not hold."""


class AgentAttestor(ABC):
    """The agent half: builds the payload and answers challenges."""

    type: ClassVar[str]
    can_reattest: ClassVar[bool] = True

    @abstractmethod
    def payload(self) -> bytes:
        """The first message's attestation data (read fresh each time: tokens rotate)."""

    def respond(self, challenge: bytes) -> bytes:
        raise InvalidAttestationPayload(f"{self.type} does not answer challenges")


def require_keys(
    config: Mapping[str, Any], *, known: set[str], required: frozenset[str] = frozenset()
) -> None:
    """Refuse unknown and missing settings with stable codes."""
    if not isinstance(config, Mapping):
        raise InvalidAttestorConfig("config must be a JSON object", code="invalid_config")
    unknown = sorted(set(config) - known)
    if unknown:
        raise InvalidAttestorConfig(
            f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            code="unknown_setting",
        )
    missing = sorted(required - set(config))
    if missing:
        raise InvalidAttestorConfig(
            f"missing setting(s) {', '.join(missing)}", code="missing_setting"
        )


def string_list(config: Mapping[str, Any], name: str) -> list[str]:
    value = config.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidAttestorConfig(
            f"{name} must be a list of non-empty strings", code="invalid_setting"
        )
    return list(value)
