"""Issuance errors: each has a stable code and the HTTP status the REST and gRPC edges map."""

from __future__ import annotations

from hallmark.errors import HallmarkError


class InvalidEntry(HallmarkError):
    """A registration entry field breaks its rules (bad TTL, DNS name, selector list, ...)."""

    code = "invalid_entry"
    http_status = 400


class EntryExists(HallmarkError):
    """An entry with the same SPIFFE ID, parent ID and selectors already exists."""

    code = "entry_exists"
    http_status = 409


class InvalidJoinTokenRequest(HallmarkError):
    """A join token request with a bad TTL or alias."""

    code = "invalid_join_token"
    http_status = 400


class AttestationDenied(HallmarkError):
    """Node attestation refused: unknown, used or expired token, banned agent."""

    code = "attestation_denied"
    http_status = 403


class InvalidAttestationRequest(HallmarkError):
    """An attestation request that is malformed or too large, refused before it is parsed."""

    code = "invalid_attestation_request"
    http_status = 400


class AttestationRateLimited(HallmarkError):
    """Too many failed attestations from this source in the current window."""

    code = "rate_limited"
    http_status = 429


class AgentNotAuthenticated(HallmarkError):
    """The caller's client certificate is missing or is not a valid agent SVID of the tenant."""

    code = "agent_not_authenticated"
    http_status = 401


class AgentDenied(HallmarkError):
    """The calling agent is known but may not do this (banned, evicted, superseded SVID)."""

    code = "agent_denied"
    http_status = 403


class AgentConflict(HallmarkError):
    """The agent is already banned, or in another state the request cannot change."""

    code = "agent_conflict"
    http_status = 409


class EntryNotFound(HallmarkError):
    """No entry with this id in the caller's tenant (another tenant's id answers the same)."""

    code = "not_found"
    http_status = 404


class InvalidBatchItem(HallmarkError):
    """One item of a batch call has the wrong shape (what a single call answers with 400)."""

    code = "invalid_request"
    http_status = 400


class InvalidBatch(HallmarkError):
    """A batch call's body as a whole is refused: not an object, no items, too many items."""

    code = "invalid_request"
    http_status = 400
