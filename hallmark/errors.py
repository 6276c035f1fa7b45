"""The root exception type of the core library and its stable error codes."""

from __future__ import annotations


class HallmarkError(Exception):
    """Root of every error the core raises; `code` is stable and snake_case."""

    code = "hallmark_error"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class InvalidSpiffeId(HallmarkError):
    """A SPIFFE ID or trust domain name that breaks SPIFFE-ID.md."""

    code = "invalid_spiffe_id"


class InvalidTrustDomain(InvalidSpiffeId):
    """A trust domain name that breaks SPIFFE-ID.md section 2.1."""

    code = "invalid_trust_domain"


class InvalidSelector(HallmarkError):
    """A selector that is not `type:value`."""

    code = "invalid_selector"


class InvalidSvid(HallmarkError):
    """An X.509-SVID or CSR that breaks X509-SVID.md."""

    code = "invalid_svid"


class InvalidBundle(HallmarkError):
    """A SPIFFE bundle that cannot be parsed."""

    code = "invalid_bundle"


class UnsupportedKeyType(InvalidBundle):
    """A key no SPIFFE implementation issues (P-521, small RSA, DSA, Ed25519, ...)."""

    code = "unsupported_key_type"
