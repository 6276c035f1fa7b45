"""Compressed-time rotation: a workload's py-spiffe sources ride CA rotations without a gap.

A control plane of its own with a CA TTL of a minute and SVIDs of seconds for each key-manager
backend, the two side by side. A workload keeps an `X509Source` and a `JwtSource` open and, twice a second, checks
that the SVID its X509Source holds verifies against the X.509 bundle that same source holds at
that moment, and that a JWT-SVID fetched through the JwtSource verifies against the JWT bundle
the JwtSource holds at that moment, until it has seen two X.509 CA and two JWT key rotations.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from spiffe import JwtSource, X509Source
from spiffe import TrustDomain as PyTrustDomain

from hallmark.bundle import Bundle, JwtAuthority
from hallmark.jwtsvid import verify_jwt_svid
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import verify_x509_svid
from tests.e2e.conftest import (
    ControlPlaneProcess,
    control_plane_env,
    free_port,
    launch_control_plane,
    stop_control_plane,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

# prepare at 1/2 of the CA's life, activate at 5/6: activations at 35 s and 56 s after signup
CA_TTL = 42
SVID_TTL = CA_TTL // 6  # the longest an entry may ask for; renewed at half-life
ROTATIONS = 2
SAMPLE_EVERY = 0.5
HARD_CAP = 200.0
AUDIENCE = "rotation-e2e"
FETCH_TIMEOUT = 10.0
BACKENDS = ("vault", "pkcs11")
REDIS_DB = {"vault": 3, "pkcs11": 4}


@dataclass
class Observations:
    """What the workload saw: SVIDs, the authorities that signed them, and every failure."""

    started: float = field(default_factory=time.monotonic)
    samples: int = 0
    x509_serials: set[int] = field(default_factory=set)
    x509_issuers: list[bytes] = field(default_factory=list)  # in the order first seen
    x509_bundles: set[frozenset[bytes]] = field(default_factory=set)
    jwt_tokens: set[str] = field(default_factory=set)
    jwt_key_ids: list[str] = field(default_factory=list)
    jwt_bundles: set[frozenset[str]] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    slowest_jwt_fetch: float = 0.0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def ca_rotations(self) -> int:
        return max(len(self.x509_issuers) - 1, 0)

    def jwt_rotations(self) -> int:
        return max(len(self.jwt_key_ids) - 1, 0)

    def done(self) -> bool:
        return self.ca_rotations() >= ROTATIONS and self.jwt_rotations() >= ROTATIONS

    def summary(self, backend: str) -> str:
        return (
            f"[{backend}] {self.elapsed:.0f}s, {self.samples} samples: "
            f"{self.ca_rotations()} CA rotations, {len(self.x509_serials)} X.509-SVIDs "
            f"({len(self.x509_serials) - 1} renewals), {len(self.x509_bundles)} X.509 bundles; "
            f"{self.jwt_rotations()} JWT key rotations, {len(self.jwt_tokens)} JWT-SVIDs, "
            f"{len(self.jwt_bundles)} JWT bundles (slowest fetch {self.slowest_jwt_fetch:.2f}s); "
            f"{len(self.errors)} errors"
        )


def _key_id(cert: x509.Certificate, extension: type[x509.ExtensionType]) -> bytes:
    value = cert.extensions.get_extension_for_class(extension).value
    return bytes(getattr(value, "key_identifier", None) or getattr(value, "digest", b""))


def _kid_of(token: str) -> str:
    header = token.split(".", maxsplit=1)[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def _note(seen: list, value: object) -> None:  # type: ignore[type-arg]
    if value not in seen:
        seen.append(value)


def _check_x509(source: X509Source, trust_domain: str, seen: Observations) -> None:
    """The SVID the source holds verifies against the bundle the source holds, now."""
    context = source.get_x509_context()  # one coherent snapshot: SVID and bundles together
    svid = context.default_svid
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(PyTrustDomain(trust_domain))
    assert bundle is not None, "the X509Source holds no bundle for its own trust domain"
    verify_x509_svid(svid.cert_chain, list(bundle.x509_authorities))
    seen.x509_serials.add(svid.leaf.serial_number)
    _note(seen.x509_issuers, _key_id(svid.leaf, x509.AuthorityKeyIdentifier))
    seen.x509_bundles.add(
        frozenset(_key_id(c, x509.SubjectKeyIdentifier) for c in bundle.x509_authorities)
    )


def _check_jwt(source: JwtSource, trust_domain: str, seen: Observations) -> None:
    """A JWT-SVID fetched now verifies against the JWT bundle the source holds right after."""
    asked = time.monotonic()
    token = source.fetch_svid({AUDIENCE}, timeout=FETCH_TIMEOUT).token
    seen.slowest_jwt_fetch = max(seen.slowest_jwt_fetch, time.monotonic() - asked)
    held = source.get_bundle_for_trust_domain(PyTrustDomain(trust_domain))
    assert held is not None, "the JwtSource holds no bundle for its own trust domain"
    td = TrustDomain(trust_domain)
    bundle = Bundle(
        td, jwt_authorities=tuple(JwtAuthority(k, v) for k, v in held.jwt_authorities.items())
    )
    verify_jwt_svid(token, audience=AUDIENCE, bundles={td: bundle})
    seen.jwt_tokens.add(token)
    _note(seen.jwt_key_ids, _kid_of(token))
    seen.jwt_bundles.add(frozenset(held.jwt_authorities))


def _sample(x509_source: X509Source, jwt_source: JwtSource, td: str, seen: Observations) -> None:
    seen.samples += 1
    for check, source in ((_check_x509, x509_source), (_check_jwt, jwt_source)):
        try:
            check(source, td, seen)  # type: ignore[operator]
        except Exception as exc:  # every failure is a finding: record it, keep watching
            seen.errors.append(
                f"{seen.elapsed:6.1f}s {check.__name__}: {type(exc).__name__}: {exc}"
            )


def _plane_env(backend: str, data_dir: Path) -> dict[str, str]:
    env = control_plane_env(redis_db=REDIS_DB[backend])
    env.update(
        HALLMARK_CA_TTL=str(CA_TTL),
        HALLMARK_ROTATION_INTERVAL="1",
        HALLMARK_DEFAULT_KEY_MANAGER=backend,
        HALLMARK_AGENT_SVID_TTL=str(SVID_TTL),
        HALLMARK_FAST_PASSWORD_HASHER="true",
    )
    if backend == "pkcs11":  # a SoftHSM2 token dir and PIN secret of this control plane's own
        from trustdomains.keymanagers.pkcs11 import SOFTHSM2_CONF

        softhsm = data_dir / "softhsm"
        (softhsm / "tokens").mkdir(mode=0o700, parents=True)
        conf = softhsm / "softhsm2.conf"
        conf.write_text(SOFTHSM2_CONF.format(tokendir=softhsm / "tokens"))
        env.update(
            SOFTHSM2_CONF=str(conf),
            HALLMARK_PKCS11_PIN_SECRET=secrets.token_hex(32),
            HALLMARK_PKCS11_TOKEN_LOCK_FILE=str(softhsm / "token-init.lock"),
        )
    return env


def _start_workload_agent(plane: ControlPlaneProcess, work: Path) -> tuple[dict, str, Path]:
    tenant = plane.signup("rotation")
    td, token = tenant["trust_domain"], tenant["token"]
    alias = f"spiffe://{td}/node/rotation"
    answer = plane.call(
        token,
        "POST",
        "entries",
        json={
            "spiffe_id": f"spiffe://{td}/rotation/workload",
            "parent_id": alias,
            "selectors": [f"unix:uid:{os.getuid()}"],
            "x509_svid_ttl": SVID_TTL,
            "jwt_svid_ttl": SVID_TTL,
        },
    )
    assert answer.status_code == 201, answer.text
    join = plane.call(token, "POST", "join-tokens", json={"spiffe_id": alias}).json()["token"]
    work.mkdir()
    config = work / "agent.toml"
    config.write_text("sync_interval = 1.0\n")
    _, socket_path = plane.start_agent(
        td, join, work, "--trust-bundle-url", tenant["bundle_url"], "--config", str(config)
    )
    wait_for(socket_path.exists, 60, "the Workload API socket")
    return tenant, td, socket_path


def _tail(path: Path, lines: int = 40) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


@pytest.mark.timeout(420)
def test_workload_sources_ride_two_ca_rotations_with_every_svid_verifying(
    tmp_path: Path, django_db_setup: None
) -> None:
    # given, for each key-manager backend, a control plane whose CAs live a minute and whose
    # SVIDs live seconds (both at once: the rotations take the same minutes side by side)
    with ThreadPoolExecutor(len(BACKENDS)) as pool:
        planes = dict(zip(BACKENDS, pool.map(_launch, BACKENDS, [tmp_path] * 2), strict=True))
    seen = {backend: Observations() for backend in BACKENDS}
    try:
        workloads = {
            backend: _start_workload_agent(plane, tmp_path / f"agent-{backend}")
            for backend, plane in planes.items()
        }
        for backend, (tenant, _, _) in workloads.items():
            trust_domain = planes[backend].call(tenant["token"], "GET", "trust-domain").json()
            assert trust_domain["key_manager"] == backend, trust_domain

        # when a workload on each keeps both sources open through the rotations
        with contextlib.ExitStack() as stack:
            sources = {
                backend: (
                    stack.enter_context(
                        X509Source(socket_path=f"unix:{socket_path}", timeout_in_seconds=60)
                    ),
                    stack.enter_context(
                        JwtSource(socket_path=f"unix:{socket_path}", timeout_in_seconds=60)
                    ),
                    td,
                )
                for backend, (_, td, socket_path) in workloads.items()
            }
            seen = {backend: Observations() for backend in BACKENDS}
            watching = set(BACKENDS)
            while watching and max(s.elapsed for s in seen.values()) < HARD_CAP:
                for backend in sorted(watching):
                    x509_source, jwt_source, td = sources[backend]
                    _sample(x509_source, jwt_source, td, seen[backend])
                    if x509_source.is_closed() or jwt_source.is_closed():
                        seen[backend].errors.append(
                            f"{seen[backend].elapsed:6.1f}s a source closed itself"
                        )
                        watching.discard(backend)
                    elif seen[backend].done():
                        watching.discard(backend)
                time.sleep(SAMPLE_EVERY)
    finally:
        for plane in planes.values():
            stop_control_plane(plane)
        for backend in BACKENDS:
            print("\n" + seen[backend].summary(backend))

    # then everything each workload held verified, through two rotations of each kind of key
    for backend in BACKENDS:
        observed = seen[backend]
        logs = (
            f"agent.log:\n{_tail(tmp_path / f'agent-{backend}' / 'agent.log')}\n"
            f"up.log: {planes[backend].data_dir}/up.log"
        )
        assert not observed.errors, "\n".join(observed.errors[:20]) + "\n" + logs
        assert observed.ca_rotations() >= ROTATIONS, observed.summary(backend) + "\n" + logs
        assert observed.jwt_rotations() >= ROTATIONS, observed.summary(backend) + "\n" + logs
        # SVIDs renew at half-life: several per CA, let alone per rotation
        assert len(observed.x509_serials) >= 3 * (ROTATIONS + 1), observed.summary(backend)
        assert len(observed.jwt_tokens) >= 3 * (ROTATIONS + 1), observed.summary(backend)


def _launch(backend: str, tmp_path: Path) -> ControlPlaneProcess:
    data_dir = tmp_path / f"plane-{backend}"
    data_dir.mkdir()
    return launch_control_plane(data_dir, _plane_env(backend, data_dir), free_port(), free_port())
