"""SPIFFE IDs and trust domain names, validated exactly as SPIFFE-ID.md says."""

from __future__ import annotations

import string
from dataclasses import dataclass

from hallmark.errors import InvalidSpiffeId, InvalidTrustDomain

SCHEME = "spiffe://"
# SPIFFE-ID.md 2.3: URIs are limited to 2048 bytes.
MAX_SPIFFE_ID_BYTES = 2048
# SPIFFE-ID.md 2.1: lowercase letters, digits, dots, dashes and underscores.
_TRUST_DOMAIN_CHARS = frozenset(string.ascii_lowercase + string.digits + ".-_")
# SPIFFE-ID.md 2.2: path segments are letters, digits, dots, dashes and underscores.
_PATH_CHARS = frozenset(string.ascii_letters + string.digits + ".-_")
# SPIFFE-ID.md 2.1: trust domain names are at most 255 characters.
MAX_TRUST_DOMAIN_LENGTH = 255


@dataclass(frozen=True, order=True)
class TrustDomain:
    """A validated SPIFFE trust domain name such as `example.org`."""

    name: str

    def __post_init__(self) -> None:
        validate_trust_domain_name(self.name)

    @classmethod
    def parse(cls, text: str) -> TrustDomain:
        """Accept a bare name or `spiffe://name` (no path)."""
        if not isinstance(text, str):
            raise InvalidTrustDomain("a trust domain must be a string")
        if text.startswith(SCHEME):
            spiffe_id = SpiffeId.parse(text)
            if spiffe_id.path:
                raise InvalidTrustDomain(f"{text!r} has a path; a trust domain has none")
            return spiffe_id.trust_domain
        return cls(text)

    @property
    def id(self) -> SpiffeId:
        """The trust domain's own SPIFFE ID, `spiffe://<name>`, used as bundle map key."""
        return SpiffeId(self, "")

    def spiffe_id(self, path: str) -> SpiffeId:
        """A SPIFFE ID in this trust domain with the given absolute path."""
        return SpiffeId(self, path)

    def __str__(self) -> str:
        return self.name


def validate_trust_domain_name(name: str) -> None:
    if not isinstance(name, str):
        raise InvalidTrustDomain("a trust domain must be a string")
    if not name:
        raise InvalidTrustDomain("trust domain is empty")
    if len(name) > MAX_TRUST_DOMAIN_LENGTH:
        raise InvalidTrustDomain(
            f"trust domain is {len(name)} characters; at most {MAX_TRUST_DOMAIN_LENGTH} allowed"
        )
    bad = sorted(set(name) - _TRUST_DOMAIN_CHARS)
    if bad:
        hint = ""
        if ":" in bad:
            hint = " (a port is not allowed)"
        elif "@" in bad:
            hint = " (userinfo is not allowed)"
        elif any(c.isupper() for c in bad):
            hint = " (use lowercase)"
        raise InvalidTrustDomain(
            f"trust domain {name!r} has characters {''.join(bad)!r} outside [a-z0-9.-_]{hint}"
        )


@dataclass(frozen=True, order=True)
class SpiffeId:
    """A validated SPIFFE ID: a trust domain and a path (empty or starting with `/`)."""

    trust_domain: TrustDomain
    path: str

    def __post_init__(self) -> None:
        validate_path(self.path)
        if len(str(self).encode()) > MAX_SPIFFE_ID_BYTES:
            raise InvalidSpiffeId(f"SPIFFE ID is longer than {MAX_SPIFFE_ID_BYTES} bytes")

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        if not isinstance(text, str) or not text:
            raise InvalidSpiffeId("SPIFFE ID is empty")
        if len(text.encode()) > MAX_SPIFFE_ID_BYTES:
            raise InvalidSpiffeId(f"SPIFFE ID is longer than {MAX_SPIFFE_ID_BYTES} bytes")
        if not text.startswith(SCHEME):
            if text.lower().startswith(SCHEME):
                raise InvalidSpiffeId(f"{text!r}: the scheme must be lowercase 'spiffe://'")
            raise InvalidSpiffeId(f"{text!r} does not start with 'spiffe://'")
        rest = text[len(SCHEME) :]
        if "?" in rest or "#" in rest:
            raise InvalidSpiffeId(f"{text!r}: query and fragment are not allowed")
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            raise InvalidSpiffeId(f"{text!r}: userinfo is not allowed")
        if ":" in authority:
            raise InvalidSpiffeId(f"{text!r}: a port is not allowed")
        try:
            trust_domain = TrustDomain(authority)
        except InvalidTrustDomain as exc:
            raise InvalidSpiffeId(f"{text!r}: {exc.detail}") from None
        return cls(trust_domain, slash + path)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")[1:]) if self.path else ()

    def member_of(self, trust_domain: TrustDomain) -> bool:
        return self.trust_domain == trust_domain

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain.name}{self.path}"


def validate_path(path: str) -> None:
    if path == "":
        return
    if not path.startswith("/"):
        raise InvalidSpiffeId(f"path {path!r} must start with '/'")
    for segment in path.split("/")[1:]:
        if segment == "":
            raise InvalidSpiffeId(f"path {path!r} has an empty segment or a trailing '/'")
        if segment in (".", ".."):
            raise InvalidSpiffeId(f"path {path!r} has a '.' or '..' segment")
        bad = sorted(set(segment) - _PATH_CHARS)
        if bad:
            raise InvalidSpiffeId(
                f"path {path!r} has characters {''.join(bad)!r} outside [A-Za-z0-9.-_]"
                " (percent-encoding is not allowed)"
            )
