"""Join-token node attestation: the agent proves itself with a single-use secret token.

The agent half builds the `attestation_data` of an AttestAgent request; the server half
(in issuance/) parses it with `parse_attestation_data` and redeems the token.
"""

from __future__ import annotations

import json

from hallmark.errors import HallmarkError

ATTESTATION_TYPE = "join_token"
MAX_TOKEN_LENGTH = 512


class InvalidAttestationData(HallmarkError):
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
