"""Upstream authorities: a trust domain's CA as an intermediate of a Vault/OpenBao PKI mount.

As SPIRE's UpstreamAuthority "vault": the CA key stays in the trust domain's key manager;
a CSR signed there goes to the upstream's `<mount>/root/sign-intermediate`, and the answer
gives the CA certificate, the intermediates above it and the upstream root. The bundle then
publishes the upstream roots, and every SVID chain carries our CA and those intermediates.

The operator names upstreams in a JSON file (HALLMARK_UPSTREAM_AUTHORITIES_FILE):

    {"corp-pki": {"address": "https://vault.corp:8200", "mount": "pki",
                  "token_file": "/run/secrets/pki-token", "ca_file": "/etc/ssl/corp.pem",
                  "trust_domains": ["*.corp.example"]}}

`token` may stand in for `token_file`; `trust_domains` (exact names or `*.suffix`, `*` for
all) says which trust domains may use it, and an upstream without the list is offered to none
— all trust domains chained to one root trust each other's chains, so share an upstream only
between trust domains that should. Credentials live in configuration, never in the database.
"embedded" (the embedded OpenBao's PKI) is offered, to every trust domain, only when the
operator sets HALLMARK_EMBEDDED_UPSTREAM=true.

Each CA is signed with X.509 name constraints where the upstream supports them: permitted
URI domain and permitted DNS domain = the trust domain, so even a relying party that trusts
the shared root refuses a certificate this CA signs for another tenant's names. OpenBao 2.7
applies `permitted_dns_domains` and ignores `permitted_uri_domains` (Vault 1.19+ applies
both). The DNS constraint also refuses SVID DNS names outside the trust domain; an operator
whose tenants need such names sets `"dns_name_constraints": false` for that upstream.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from django.conf import settings

from hallmark.errors import HallmarkError, InvalidSvid
from hallmark.signing import Signer
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import BACKDATE, check_upstream_signed_ca, signing_certificate_csr
from trustdomains.keymanagers.vault import vault_error_text

log = logging.getLogger(__name__)
EMBEDDED = "embedded"
REQUEST_TIMEOUT_SECONDS = 15.0


class UnknownUpstreamAuthority(HallmarkError):
    """The named upstream is not configured, or this trust domain may not use it."""

    code = "unknown_upstream_authority"
    http_status = 400


class UpstreamAuthorityUnavailable(HallmarkError):
    """The upstream could not sign now (unreachable, sealed); nothing was stored."""

    code = "upstream_authority_unavailable"
    http_status = 503


class UpstreamAuthorityRefused(HallmarkError):
    """The upstream answered, but refused or returned a certificate Hallmark cannot use."""

    code = "upstream_authority_refused"
    http_status = 502


@dataclass(frozen=True)
class SignedCa:
    """An upstream-signed CA: its certificate, the intermediates above it, the trust anchors."""

    certificate: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]


@dataclass(frozen=True)
class UpstreamAuthority:
    """One configured upstream PKI mount and how to reach it."""

    name: str
    address: str
    mount: str
    token: str = field(repr=False, default="")
    token_file: str = ""
    ca_file: str = ""
    trust_domains: tuple[str, ...] = ()
    dns_name_constraints: bool = True

    def allows(self, trust_domain: str) -> bool:
        """Only trust domains the operator listed; no list offers the upstream to none."""
        return any(fnmatch.fnmatchcase(trust_domain, pattern) for pattern in self.trust_domains)

    def sign_ca(self, trust_domain: TrustDomain, signer: Signer, *, ttl: dt.timedelta) -> SignedCa:
        """Have the upstream sign the CA key behind `signer` as an intermediate for 'ttl'."""
        answer = self._sign_intermediate(
            signing_certificate_csr(trust_domain, signer), trust_domain, ttl
        )
        try:
            certificate = x509.load_pem_x509_certificate(answer["certificate"].encode())
            above = [x509.load_pem_x509_certificate(pem.encode()) for pem in _chain(answer)]
        except (KeyError, ValueError, AttributeError) as exc:
            raise UpstreamAuthorityRefused(
                f"upstream authority {self.name!r} returned no usable certificate: {exc}"
            ) from None
        above = [c for c in above if c != certificate]
        try:
            check_upstream_signed_ca(
                certificate, above, trust_domain=trust_domain, public_key=signer.public_key()
            )
        except InvalidSvid as exc:
            raise UpstreamAuthorityRefused(
                f"upstream authority {self.name!r} signed a CA Hallmark cannot use: {exc.detail}"
            ) from None
        roots = tuple(c for c in above if _self_signed(c)) or (above[-1],)
        intermediates = tuple(c for c in above if c not in roots)
        return SignedCa(certificate=certificate, intermediates=intermediates, roots=roots)

    def _sign_intermediate(
        self, csr_der: bytes, trust_domain: TrustDomain, ttl: dt.timedelta
    ) -> dict[str, Any]:
        csr_pem = x509.load_der_x509_csr(csr_der).public_bytes(serialization.Encoding.PEM)
        client = hvac.Client(
            url=self.address,
            token=self._token(),
            verify=self.ca_file or True,
            timeout=REQUEST_TIMEOUT_SECONDS,
        )
        try:
            response = client.secrets.pki.sign_intermediate(
                csr=csr_pem.decode(),
                common_name=f"Hallmark CA {trust_domain.name}"[:64],
                extra_params={
                    "uri_sans": str(trust_domain.id),
                    "exclude_cn_from_sans": True,
                    "use_csr_values": False,
                    "ttl": f"{int(ttl.total_seconds())}s",
                    "max_path_length": 0,  # our CA signs leaf SVIDs only
                    **self._name_constraints(trust_domain),
                    "not_before_duration": f"{int(BACKDATE.total_seconds())}s",
                    "format": "pem",
                },
                mount_point=self.mount,
            )
        except (requests.exceptions.RequestException, hvac.exceptions.VaultDown) as exc:
            raise UpstreamAuthorityUnavailable(
                f"upstream authority {self.name!r} at {self.address} could not sign now "
                f"({type(exc).__name__}); check that it is running and unsealed"
            ) from None
        except hvac.exceptions.VaultError as exc:
            raise UpstreamAuthorityRefused(
                f"upstream authority {self.name!r} refused to sign the CA of {trust_domain.name} "
                f"at {self.mount}/root/sign-intermediate: {vault_error_text(exc)}; check its "
                "token's policy and the mount's maximum TTL"
            ) from None
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, dict):
            raise UpstreamAuthorityRefused(f"upstream authority {self.name!r} returned no data")
        ignored = [
            w
            for w in response.get("warnings") or ()
            if isinstance(w, str) and "unrecognized parameters" in w
        ]
        if ignored:
            log.info("upstream authority %r: %s", self.name, "; ".join(ignored))
        return data

    def _name_constraints(self, trust_domain: TrustDomain) -> dict[str, str]:
        """The constraints asked of the upstream (it ignores those it does not know)."""
        constraints = {"permitted_uri_domains": trust_domain.name}
        if self.dns_name_constraints:
            constraints["permitted_dns_domains"] = trust_domain.name
        return constraints

    def _token(self) -> str:
        if self.token:
            return self.token
        try:
            return Path(self.token_file).read_text().strip()
        except OSError as exc:
            raise UpstreamAuthorityUnavailable(
                f"cannot read the token of upstream authority {self.name!r} from "
                f"{self.token_file}: {exc.strerror}"
            ) from None


def _chain(answer: dict[str, Any]) -> list[str]:
    chain = answer.get("ca_chain") or [answer["issuing_ca"]]
    return [pem for pem in chain if isinstance(pem, str) and pem.strip()]


def _self_signed(certificate: x509.Certificate) -> bool:
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@cache
def configured() -> dict[str, UpstreamAuthority]:
    """The operator's upstream authorities by name (read once a process)."""
    upstreams: dict[str, UpstreamAuthority] = {}
    if settings.EMBEDDED_UPSTREAM and settings.EMBEDDED and settings.VAULT_TOKEN:
        upstreams[EMBEDDED] = UpstreamAuthority(
            name=EMBEDDED,
            address=settings.VAULT_ADDR,
            mount=settings.EMBEDDED_UPSTREAM_MOUNT,
            token=settings.VAULT_TOKEN,
            trust_domains=("*",),
        )
    if settings.UPSTREAM_AUTHORITIES_FILE:
        upstreams.update(_load(Path(settings.UPSTREAM_AUTHORITIES_FILE)))
    return upstreams


def _load(path: Path) -> dict[str, UpstreamAuthority]:
    from django.core.exceptions import ImproperlyConfigured

    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"HALLMARK_UPSTREAM_AUTHORITIES_FILE {path} cannot be read as JSON: {exc}"
        ) from None
    if not isinstance(document, dict):
        raise ImproperlyConfigured(f"{path} must hold a JSON object of upstream authorities")
    upstreams = {}
    for name, entry in document.items():
        if not isinstance(entry, dict) or not entry.get("address") or not entry.get("mount"):
            raise ImproperlyConfigured(
                f"upstream authority {name!r} in {path} needs address and mount"
            )
        if not (entry.get("token") or entry.get("token_file")):
            raise ImproperlyConfigured(
                f"upstream authority {name!r} in {path} needs token or token_file"
            )
        upstreams[name] = UpstreamAuthority(
            name=name,
            address=str(entry["address"]),
            mount=str(entry["mount"]).strip("/"),
            token=str(entry.get("token", "")),
            token_file=str(entry.get("token_file", "")),
            ca_file=str(entry.get("ca_file", "")),
            trust_domains=_trust_domain_patterns(name, entry.get("trust_domains", [])),
            dns_name_constraints=entry.get("dns_name_constraints", True) is not False,
        )
    return upstreams


def _trust_domain_patterns(name: str, patterns: object) -> tuple[str, ...]:
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"upstream authority {name!r}: trust_domains must be a list of names or patterns"
        )
    if not patterns:
        log.warning(
            "upstream authority %r lists no trust_domains: it is offered to no tenant", name
        )
    return tuple(patterns)


def get(name: str, *, trust_domain: str) -> UpstreamAuthority:
    """The named upstream, if this trust domain may use it; else a clear error."""
    upstream = configured().get(name)
    if upstream is None or not upstream.allows(trust_domain):
        usable = sorted(n for n, u in configured().items() if u.allows(trust_domain))
        raise UnknownUpstreamAuthority(
            f"no upstream authority {name!r} for trust domain {trust_domain}; "
            + (f"choose one of: {', '.join(usable)}" if usable else "none is configured for it")
        )
    return upstream
