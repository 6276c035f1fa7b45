"""tpm_devid: where an attestation's time goes, against a real TPM (swtpm).

Prints p50/p99 of each step of --count full conversations: the agent half's payload (EK,
AK, DevID load and certification, EK certificate read: tpm2-tools) and answer (DevID
signature, credential activation), and the server half's challenge (chain, EK certificate,
AK certification checks, TPM2_MakeCredential in Python) and attest (the same checks again,
then the answers); the server half's figure bounds the tpm_devid attestations/s one
agent-API core can judge (the gRPC, database and SVID-minting costs come on top, as for
x509pop in benchmarks/attestation.py). The agent's TPM time is the node's, not the
server's: a real TPM chip is slower than swtpm.

Run: `.venv/bin/python -m benchmarks.tpm_devid [--count 10]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attestors.node.tpm_devid import TpmDevidAgent, TpmDevidServer
from tests.fakes.pki import TestCA, pem
from tests.fakes.swtpm import Swtpm


class NoLookup:
    def redeem_join_token(self, secret: str) -> Any:
        raise AssertionError

    def https(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError


def timed(
    samples: dict[str, list[float]], name: str, call: Callable[..., Any], *args: Any, **kw: Any
) -> Any:
    start = time.perf_counter()
    result = call(*args, **kw)
    samples.setdefault(name, []).append(time.perf_counter() - start)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10)
    count = parser.parse_args().count
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        maker, fleet = TestCA("maker"), TestCA("fleet")
        tpm = Swtpm(root / "swtpm").start()
        try:
            tpm.provision_ek_certificate(maker, root / "maker")
            agent = TpmDevidAgent.from_settings(tpm.provision_devid(fleet, "n1", root / "devid"))
            server = TpmDevidServer(
                {"devid_ca_pem": pem(fleet.cert), "endorsement_ca_pem": pem(maker.cert)},
                trust_domain="bench.test",
            )
            samples: dict[str, list[float]] = {}
            for _ in range(count):
                payload = timed(samples, "agent payload (tpm2-tools)", agent.payload)
                challenge = timed(samples, "server challenge", server.challenge, payload)
                response = timed(samples, "agent answer (tpm2-tools)", agent.respond, challenge)
                timed(
                    samples,
                    "server attest",
                    server.attest,
                    payload,
                    challenge=challenge,
                    response=response,
                    lookup=NoLookup(),
                )
        finally:
            tpm.stop()
    print(f"tpm_devid, {count} conversations with swtpm")
    for name, values in samples.items():
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(f"  {name:28} p50 {statistics.median(values) * 1e3:8.1f} ms  p99 {p99 * 1e3:8.1f} ms")
    server_side = statistics.median(samples["server challenge"]) + statistics.median(
        samples["server attest"]
    )
    print(
        f"  server half per attestation {server_side * 1e3:.1f} ms = {1 / server_side:.0f}/s a core"
    )


if __name__ == "__main__":
    main()
