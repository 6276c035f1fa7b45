"""The agent talks only to its trust domain's server: `spiffe://<td>/spire/server`.

Issue 7, finding 1 (seen): an agent sent its join token to a TLS server whose certificate
chained to its bundle and named the trust domain as DNS SAN, but carried another SPIFFE ID
(under a shared upstream root, or from an entry with that DNS name). Real TLS, real gRPC.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agent.manager import AgentManager
from agent.servertls import ServerAuthenticationError, check_server_certificate
from agent.state import AgentState
from hallmark.spiffeid import SpiffeId, TrustDomain
from tests.agent.agent_api_standin import AgentApiStandin
from tests.agent.test_manager import config_for

TD = TrustDomain("example.org")
IMPOSTOR = SpiffeId.parse("spiffe://example.org/workload/looks-like-a-server")


def _impostor(standin: AgentApiStandin) -> None:
    """Make the stand-in present IMPOSTOR (same CA, DNS SAN example.org) instead."""
    real_leaf = standin.authority.leaf

    def leaf(spiffe_id: SpiffeId, key: Any, ttl: dt.timedelta, dns: tuple[str, ...] = ()) -> Any:
        if str(spiffe_id).endswith("/spire/server"):
            spiffe_id = IMPOSTOR
        return real_leaf(spiffe_id, key, ttl, dns)

    standin.authority.leaf = leaf  # type: ignore[method-assign]


def test_server_with_another_spiffe_id_never_receives_the_join_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        # given an agent API whose certificate chains to the agent's bundle and names the
        # trust domain as DNS SAN, but is the SVID of another SPIFFE ID
        standin = AgentApiStandin()
        _impostor(standin)
        await standin.start()
        try:
            manager = AgentManager(config_for(standin, tmp_path), AgentState())

            # when the agent tries to attest with its join token
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(manager.bootstrap(), timeout=3)

            # then the token never reached that server, and the log says why
            assert standin.servicer.calls.attest == 0
        finally:
            await standin.stop()

    with caplog.at_level(logging.ERROR, logger="agent.servertls"):
        asyncio.run(main())
    assert f"presented {IMPOSTOR}, not spiffe://example.org/spire/server" in caplog.text


def test_the_real_server_id_is_accepted(tmp_path: Path) -> None:
    async def main() -> None:
        standin = AgentApiStandin()
        await standin.start()
        try:
            manager = AgentManager(config_for(standin, tmp_path), AgentState())
            await asyncio.wait_for(manager.bootstrap(), timeout=30)
            assert standin.servicer.calls.attest == 1
        finally:
            await standin.stop()

    asyncio.run(main())


def _leaf_der(spiffe_ids: list[str]) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=1))
    )
    names: list[x509.GeneralName] = [x509.DNSName("example.org")]
    names += [x509.UniformResourceIdentifier(u) for u in spiffe_ids]
    builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    "uris",
    [
        [],
        ["spiffe://other.org/spire/server"],
        ["spiffe://example.org/spire/server", "spiffe://example.org/extra"],
        ["spiffe://example.org/spire/server/"],
    ],
)
def test_certificates_without_exactly_the_server_id_are_refused(uris: list[str]) -> None:
    with pytest.raises(ServerAuthenticationError):
        check_server_certificate(_leaf_der(uris), TD)


def test_certificate_with_exactly_the_server_id_passes() -> None:
    check_server_certificate(_leaf_der(["spiffe://example.org/spire/server"]), TD)
