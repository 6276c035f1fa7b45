"""Test-only: the agent's Workload API server over a static, locally signed state.

Run as a subprocess (py-spiffe and hallmark's workloadapi_pb2 cannot share a process):
    python tests/agent/workload_server_runner.py --socket PATH --data-dir DIR --entries JSON
Prints READY once serving. Reads commands on stdin, answering one line each:
    rotate            mint new SVIDs for every entry          -> ROTATED
    mint ENTRY_ID     mint an SVID for one (pending) entry    -> MINTED
    remove ENTRY_ID   drop an entry and its SVID              -> REMOVED
    new-ca            add a second CA to the bundle           -> BUNDLE
    mint-jwt TD ID AUD TTL [AGE]  a JWT-SVID signed by TD's JWT key, issued AGE s ago -> token
    drop-federated TD stop holding TD's federated bundle      -> FEDERATED
    jwt-mints         how many JWT-SVIDs the agent's cache minted -> the number
EOF at stdin stops the server.

Trust domains: example.org (the agent's), partner.org (federated: the agent holds its bundle,
served to entries with federates_with), untrusted.org (its keys exist, the agent knows none).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.jwtcache import JwtSvidCache, MintedJwt
from agent.state import AgentState, Entry, EntrySvid, X509Svid
from agent.workload.server import WorkloadApiServer
from hallmark.bundle import Bundle, JwtAuthority
from hallmark.jwtsvid import mint_jwt_svid
from hallmark.selectors import parse_selectors
from hallmark.signing import LocalSigner
from hallmark.spiffeid import SpiffeId, TrustDomain
from hallmark.x509svid import LeafRequest, build_leaf, build_signing_certificate, utcnow

TRUST_DOMAIN = TrustDomain("example.org")
FOREIGN = ("partner.org", "untrusted.org")


class StaticDomain:
    """A trust domain's CA and JWT signing key, in memory."""

    def __init__(self, trust_domain: TrustDomain) -> None:
        self.trust_domain = trust_domain
        self.signer = LocalSigner.generate()
        self.jwt_signer = LocalSigner.generate()
        self.key_id = f"{trust_domain.name}-jwt-1"
        now = utcnow()
        self.ca = build_signing_certificate(
            trust_domain=trust_domain,
            subject_key=self.signer.public_key(),
            signer=self.signer,
            not_before=now - dt.timedelta(minutes=1),
            not_after=now + dt.timedelta(days=1),
        )

    def bundle(self) -> Bundle:
        jwt = JwtAuthority(self.key_id, self.jwt_signer.public_key())
        return Bundle(self.trust_domain, (self.ca,), (jwt,))

    def mint_jwt(self, spiffe_id: str, audience: list[str], ttl: float, age: float = 0) -> str:
        return mint_jwt_svid(
            spiffe_id=SpiffeId.parse(spiffe_id),
            audience=audience,
            ttl=dt.timedelta(seconds=ttl),
            key_id=self.key_id,
            signer=self.jwt_signer,
            now=utcnow() - dt.timedelta(seconds=age),
        )


class StaticAgent:
    """A CA and entries held in memory; mints SVIDs the way the control plane would."""

    def __init__(self, entries: list[dict[str, object]], pending: set[str]) -> None:
        self.domains = {
            name: StaticDomain(TrustDomain(name)) for name in (TRUST_DOMAIN.name, *FOREIGN)
        }
        local = self.domains[TRUST_DOMAIN.name]
        self.signer = local.signer
        self.ca = local.ca
        self.bundle = local.bundle()
        self.federated = {"partner.org": self.domains["partner.org"].bundle()}
        self.entries = {
            str(e["id"]): Entry(
                id=str(e["id"]),
                spiffe_id=SpiffeId.parse(str(e["spiffe_id"])),
                parent_id="spiffe://example.org/spire/agent/test",
                selectors=parse_selectors(e["selectors"]),  # type: ignore[arg-type]
                hint=str(e.get("hint", "")),
                jwt_svid_ttl=int(e.get("jwt_svid_ttl", 300)),  # type: ignore[call-overload]
                federates_with=tuple(e.get("federates_with", ())),  # type: ignore[arg-type]
            )
            for e in entries
        }
        self.svids = {k: self.mint(v) for k, v in self.entries.items() if k not in pending}

    def mint(self, entry: Entry) -> EntrySvid:
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = build_leaf(
            LeafRequest(entry.spiffe_id, key.public_key(), dt.timedelta(hours=1)),
            ca=self.ca,
            signer=self.signer,
        )
        return EntrySvid(entry.id, entry.revision, X509Svid((leaf,), key))

    def add_ca(self) -> None:
        signer = LocalSigner.generate()
        now = utcnow()
        ca = build_signing_certificate(
            trust_domain=TRUST_DOMAIN,
            subject_key=signer.public_key(),
            signer=signer,
            not_before=now - dt.timedelta(minutes=1),
            not_after=now + dt.timedelta(days=1),
        )
        self.bundle = Bundle(
            TRUST_DOMAIN, (*self.bundle.x509_authorities, ca), self.bundle.jwt_authorities
        )

    async def mint_jwt(self, entry_id: str, audience: tuple[str, ...]) -> MintedJwt:
        """What NewJWTSVID does at the control plane, done locally."""
        entry = self.entries[entry_id]
        now = utcnow()
        token = self.domains[TRUST_DOMAIN.name].mint_jwt(
            str(entry.spiffe_id), list(audience), entry.jwt_svid_ttl
        )
        issued = float(int(now.timestamp()))
        return MintedJwt(token, issued, issued + entry.jwt_svid_ttl)


async def _commands(agent: StaticAgent, state: AgentState, cache: JwtSvidCache) -> None:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command, _, argument = line.strip().partition(" ")
        if command == "mint-jwt":
            td, spiffe_id, audience, ttl, *age = argument.split()
            token = agent.domains[td].mint_jwt(
                spiffe_id, [audience], float(ttl), float(age[0]) if age else 0
            )
            print(token, flush=True)
            continue
        if command == "jwt-mints":
            print(cache.mints, flush=True)
            continue
        if command == "drop-federated":
            agent.federated.pop(argument, None)
            answer = "FEDERATED"
        elif command == "rotate":
            agent.svids = {k: agent.mint(v) for k, v in agent.entries.items()}
            answer = "ROTATED"
        elif command == "mint":
            agent.svids[argument] = agent.mint(agent.entries[argument])
            answer = "MINTED"
        elif command == "remove":
            agent.entries.pop(argument, None)
            agent.svids.pop(argument, None)
            answer = "REMOVED"
        elif command == "new-ca":
            agent.add_ca()
            answer = "BUNDLE"
        else:
            print(f"UNKNOWN {command}", flush=True)
            continue
        cache.retain(agent.entries)
        await state.publish(
            bundle=agent.bundle,
            entries=agent.entries,
            svids=agent.svids,
            federated_bundles=agent.federated,
        )
        print(answer, flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--entries", required=True, help="JSON list of {id, spiffe_id, selectors}")
    parser.add_argument("--pending", action="append", default=[], help="entry without SVID")
    parser.add_argument("--svid-wait", type=float, default=2.0)
    args = parser.parse_args()
    agent = StaticAgent(json.loads(args.entries), set(args.pending))
    state = AgentState()
    await state.publish(
        bundle=agent.bundle,
        entries=agent.entries,
        svids=agent.svids,
        federated_bundles=agent.federated,
        ready=True,
    )
    cache = JwtSvidCache(agent.mint_jwt)
    server = WorkloadApiServer(
        state,
        socket_path=args.socket,
        svid_wait=args.svid_wait,
        jwt_svids=cache,
    )
    await server.start()
    with open(f"{args.data_dir}/ca.pem", "wb") as handle:
        handle.write(agent.ca.public_bytes(serialization.Encoding.PEM))
    with open(f"{args.data_dir}/partner_ca.pem", "wb") as handle:
        handle.write(agent.domains["partner.org"].ca.public_bytes(serialization.Encoding.PEM))
    print("READY", flush=True)
    try:
        await _commands(agent, state, cache)
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
