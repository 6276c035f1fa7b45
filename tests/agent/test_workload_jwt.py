"""The Workload API's JWT-SVID profile and federated bundles, through py-spiffe and raw gRPC.

The server runs in a subprocess over a static state (conftest.py): example.org is the agent's
trust domain, partner.org a federated one (entry e-root federates with it), untrusted.org one
the agent knows nothing of. This process runs as uid 0 (entry e-root).
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator

import grpc
import pytest
from cryptography import x509
from google.protobuf import json_format
from spiffe import JwtSource, SpiffeId, WorkloadApiClient
from spiffe import TrustDomain as SpiffeTrustDomain
from spiffe.svid.jwt_svid import JwtSvid
from spiffe.workloadapi.errors import FetchJwtSvidError
from spiffe.workloadapi.x509_context import X509Context

from hallmark.protos import workloadapi_pb2, workloadapi_pb2_grpc
from tests.agent.conftest import WorkloadServer, run_as

HEADER = (("workload.spiffe.io", "true"),)
ROOT_ID = "spiffe://example.org/root-workload"


@pytest.fixture
def stub(workload_server: WorkloadServer) -> Iterator[workloadapi_pb2_grpc.SpiffeWorkloadAPIStub]:
    with grpc.insecure_channel(workload_server.endpoint) as channel:
        yield workloadapi_pb2_grpc.SpiffeWorkloadAPIStub(channel)


def _validate(
    stub: workloadapi_pb2_grpc.SpiffeWorkloadAPIStub, token: str, audience: str
) -> object:
    request = workloadapi_pb2.ValidateJWTSVIDRequest(audience=audience, svid=token)
    return stub.ValidateJWTSVID(request, metadata=HEADER, timeout=20)


def test_fetch_jwt_svid_returns_a_token_that_verifies_against_the_jwt_bundle(
    workload_server: WorkloadServer,
) -> None:
    # when this workload (uid 0) asks py-spiffe for a JWT-SVID and the JWT bundles
    with WorkloadApiClient(socket_path=workload_server.endpoint) as client:
        svid = client.fetch_jwt_svid(audience={"reports"}, timeout=20)
        bundles = client.fetch_jwt_bundles(timeout=20)

    # then it is its own identity's token, and it verifies with the trust domain's JWT bundle
    assert str(svid.spiffe_id) == ROOT_ID
    bundle = bundles.get_bundle_for_trust_domain(SpiffeTrustDomain("example.org"))
    assert bundle is not None
    verified = JwtSvid.parse_and_validate(svid.token, bundle, {"reports"})
    assert str(verified.spiffe_id) == ROOT_ID
    assert verified.audience == {"reports"}


def test_fetch_jwt_svid_without_audience_is_invalid_argument(
    stub: workloadapi_pb2_grpc.SpiffeWorkloadAPIStub,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.FetchJWTSVID(workloadapi_pb2.JWTSVIDRequest(), metadata=HEADER, timeout=20)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("jwt_invalid_request")


def test_jwt_rpcs_without_the_security_header_are_invalid_argument(
    stub: workloadapi_pb2_grpc.SpiffeWorkloadAPIStub,
) -> None:
    request = workloadapi_pb2.JWTSVIDRequest(audience=["reports"])
    with pytest.raises(grpc.RpcError) as raised:
        stub.FetchJWTSVID(request, timeout=20)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


PY_SPIFFE_JWTS = r"""
import json, sys
from spiffe import SpiffeId, WorkloadApiClient
subject = SpiffeId(sys.argv[2]) if len(sys.argv) > 2 else None
with WorkloadApiClient(socket_path=sys.argv[1]) as client:
    try:
        svids = client.fetch_jwt_svids(audience={"reports"}, subject=subject, timeout=20)
    except Exception as exc:
        print(json.dumps({"error": str(exc)}))
    else:
        print(json.dumps({"ids": [str(s.spiffe_id) for s in svids]}))
"""


def test_fetch_jwt_svid_returns_a_token_for_every_identity_of_the_caller(
    workload_server: WorkloadServer,
) -> None:
    # given uid 1001 with two entries; when it asks for JWT-SVIDs without a SPIFFE ID
    result = run_as(1001, PY_SPIFFE_JWTS, workload_server.endpoint)

    # then it gets one token per identity
    assert json.loads(result.stdout) == {
        "ids": ["spiffe://example.org/multi-a", "spiffe://example.org/multi-b"]
    }, result.stderr


def test_fetch_jwt_svid_with_a_spiffe_id_returns_only_that_identity(
    workload_server: WorkloadServer,
) -> None:
    result = run_as(1001, PY_SPIFFE_JWTS, workload_server.endpoint, "spiffe://example.org/multi-b")

    assert json.loads(result.stdout) == {"ids": ["spiffe://example.org/multi-b"]}, result.stderr


def test_fetch_jwt_svid_for_an_identity_not_granted_is_permission_denied(
    workload_server: WorkloadServer,
) -> None:
    # when uid 0 asks for the SPIFFE ID of another workload
    with (
        WorkloadApiClient(socket_path=workload_server.endpoint) as client,
        pytest.raises(FetchJwtSvidError, match="PERMISSION_DENIED"),
    ):
        client.fetch_jwt_svid(
            audience={"reports"}, subject=SpiffeId("spiffe://example.org/nobody-workload")
        )


def test_fetch_jwt_svid_for_a_caller_without_entries_is_permission_denied(
    workload_server: WorkloadServer,
) -> None:
    result = run_as(12345, PY_SPIFFE_JWTS, workload_server.endpoint)

    assert "PERMISSION_DENIED" in json.loads(result.stdout)["error"], result.stdout


def test_jwt_bundles_hold_only_jwt_keys_for_local_and_federated_trust_domains(
    stub: workloadapi_pb2_grpc.SpiffeWorkloadAPIStub,
) -> None:
    # when uid 0 (federating with partner.org) streams the JWT bundles
    call = stub.FetchJWTBundles(workloadapi_pb2.JWTBundlesRequest(), metadata=HEADER, timeout=20)
    message = next(iter(call))
    call.cancel()

    # then the first message holds example.org and partner.org, JWT-SVID keys only, each a kid
    assert set(message.bundles) == {"spiffe://example.org", "spiffe://partner.org"}
    for jwks in message.bundles.values():
        keys = json.loads(jwks)["keys"]
        assert keys
        assert all(k["use"] == "jwt-svid" and k["kid"] and "x5c" not in k for k in keys)


PY_SPIFFE_JWT_BUNDLES = r"""
import json, sys
from spiffe import WorkloadApiClient
with WorkloadApiClient(socket_path=sys.argv[1]) as client:
    bundles = client.fetch_jwt_bundles(timeout=20)
print(json.dumps(sorted(str(b.trust_domain) for b in bundles.bundles)))
"""


def test_a_workload_not_federating_gets_only_its_own_trust_domains_jwt_bundle(
    workload_server: WorkloadServer,
) -> None:
    result = run_as(65534, PY_SPIFFE_JWT_BUNDLES, workload_server.endpoint)

    assert json.loads(result.stdout) == ["example.org"], result.stderr


def test_validate_jwt_svid_returns_the_spiffe_id_and_claims(
    workload_server: WorkloadServer, stub: workloadapi_pb2_grpc.SpiffeWorkloadAPIStub
) -> None:
    # given a token fetched for audience "reports"
    with WorkloadApiClient(socket_path=workload_server.endpoint) as client:
        token = client.fetch_jwt_svid(audience={"reports"}).token

        # when py-spiffe has the Workload API validate it
        validated = client.validate_jwt_svid(token, "reports")

    # then it is valid, and the raw answer carries the SPIFFE ID and the claims as a Struct
    assert str(validated.spiffe_id) == ROOT_ID
    response = _validate(stub, token, "reports")
    assert response.spiffe_id == ROOT_ID  # type: ignore[attr-defined]
    claims = json_format.MessageToDict(response.claims)  # type: ignore[attr-defined]
    assert claims["sub"] == ROOT_ID
    assert claims["aud"] == "reports"
    assert claims["exp"] > claims["iat"]


@pytest.mark.parametrize(
    ("token_args", "audience", "code"),
    [
        (("example.org", ROOT_ID, "reports", "300"), "billing", "jwt_audience_mismatch"),
        (("example.org", ROOT_ID, "reports", "60", "3600"), "reports", "jwt_expired"),
        (
            ("untrusted.org", "spiffe://untrusted.org/w", "reports", "300"),
            "reports",
            "jwt_untrusted_domain",
        ),
    ],
    ids=["wrong-audience", "expired", "foreign-trust-domain"],
)
def test_validate_jwt_svid_rejects_bad_tokens_with_invalid_argument(
    workload_server: WorkloadServer,
    stub: workloadapi_pb2_grpc.SpiffeWorkloadAPIStub,
    token_args: tuple[str, ...],
    audience: str,
    code: str,
) -> None:
    token = workload_server.command("mint-jwt " + " ".join(token_args))

    with pytest.raises(grpc.RpcError) as raised:
        _validate(stub, token, audience)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(code + ":"), raised.value.details()


def test_validate_jwt_svid_requires_audience_and_svid(
    stub: workloadapi_pb2_grpc.SpiffeWorkloadAPIStub,
) -> None:
    for request in (
        workloadapi_pb2.ValidateJWTSVIDRequest(audience="reports"),
        workloadapi_pb2.ValidateJWTSVIDRequest(svid="a.b.c"),
    ):
        with pytest.raises(grpc.RpcError) as raised:
            stub.ValidateJWTSVID(request, metadata=HEADER, timeout=20)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


PY_SPIFFE_VALIDATE = r"""
import json, sys
from spiffe import WorkloadApiClient
with WorkloadApiClient(socket_path=sys.argv[1]) as client:
    try:
        svid = client.validate_jwt_svid(sys.argv[2], "reports", timeout=20)
    except Exception as exc:
        print(json.dumps({"error": str(exc)}))
    else:
        print(json.dumps({"id": str(svid.spiffe_id)}))
"""


def test_validate_jwt_svid_needs_no_registration_entry(workload_server: WorkloadServer) -> None:
    # given a token of the local trust domain; when a caller with no entry validates it
    token = workload_server.command(f"mint-jwt example.org {ROOT_ID} reports 300")
    result = run_as(12345, PY_SPIFFE_VALIDATE, workload_server.endpoint, token)

    # then it is valid: validation needs no identity of one's own
    assert json.loads(result.stdout) == {"id": ROOT_ID}, result.stdout + result.stderr


def test_federated_token_validates_only_for_workloads_federating_with_its_trust_domain(
    workload_server: WorkloadServer, stub: workloadapi_pb2_grpc.SpiffeWorkloadAPIStub
) -> None:
    token = workload_server.command("mint-jwt partner.org spiffe://partner.org/api reports 300")

    # uid 0's entry federates with partner.org: valid
    assert _validate(stub, token, "reports").spiffe_id == "spiffe://partner.org/api"  # type: ignore[attr-defined]
    # uid 65534's does not: the token is untrusted for it
    result = run_as(65534, PY_SPIFFE_VALIDATE, workload_server.endpoint, token)
    assert "jwt_untrusted_domain" in json.loads(result.stdout)["error"], result.stdout


def test_jwt_source_serves_svids_and_bundles(workload_server: WorkloadServer) -> None:
    with JwtSource(
        WorkloadApiClient(socket_path=workload_server.endpoint), timeout_in_seconds=20
    ) as source:
        svid = source.fetch_svid(audience={"reports"})
        bundle = source.get_bundle_for_trust_domain(SpiffeTrustDomain("example.org"))

        assert str(svid.spiffe_id) == ROOT_ID
        assert bundle is not None
        assert str(JwtSvid.parse_and_validate(svid.token, bundle, {"reports"}).spiffe_id) == ROOT_ID


def test_jwt_svids_are_served_from_the_agents_cache(workload_server: WorkloadServer) -> None:
    # given one token for an audience set
    before = int(workload_server.command("jwt-mints"))
    with WorkloadApiClient(socket_path=workload_server.endpoint) as client:
        first = client.fetch_jwt_svid(audience={"cache-a", "cache-b"}).token

        # when the same audience set is asked for again (far before half-life)
        second = client.fetch_jwt_svid(audience={"cache-b", "cache-a"}).token

    # then the same token comes back and only one was minted
    assert second == first
    assert int(workload_server.command("jwt-mints")) == before + 1


def test_x509_context_carries_federated_bundles_for_federating_entries(
    workload_server: WorkloadServer, stub: workloadapi_pb2_grpc.SpiffeWorkloadAPIStub
) -> None:
    # when uid 0 (entry federates with partner.org) fetches its X.509 context
    with WorkloadApiClient(socket_path=workload_server.endpoint) as client:
        context = client.fetch_x509_context(timeout=20)
        bundles = client.fetch_x509_bundles(timeout=20)

    # then partner.org's CA is in the bundle set, from FetchX509SVID and FetchX509Bundles
    partner_ca = x509.load_pem_x509_certificate(workload_server.partner_ca_pem)
    partner = SpiffeTrustDomain("partner.org")
    federated = context.x509_bundle_set.get_bundle_for_trust_domain(partner)
    assert federated is not None and partner_ca in federated.x509_authorities
    listed = bundles.get_bundle_for_trust_domain(partner)
    assert listed is not None and partner_ca in listed.x509_authorities
    # and untrusted.org, which no entry federates with, is in neither
    assert (
        context.x509_bundle_set.get_bundle_for_trust_domain(SpiffeTrustDomain("untrusted.org"))
        is None
    )


PY_SPIFFE_X509_DOMAINS = r"""
import json, sys
from spiffe import WorkloadApiClient
with WorkloadApiClient(socket_path=sys.argv[1]) as client:
    context = client.fetch_x509_context(timeout=20)
    bundles = client.fetch_x509_bundles(timeout=20)
print(json.dumps({
    "context": sorted(str(b.trust_domain) for b in context.x509_bundle_set._bundles.values()),
    "bundles": sorted(str(b.trust_domain) for b in bundles._bundles.values()),
}))
"""


def test_a_workload_not_federating_gets_no_federated_x509_bundle(
    workload_server: WorkloadServer,
) -> None:
    result = run_as(65534, PY_SPIFFE_X509_DOMAINS, workload_server.endpoint)

    assert json.loads(result.stdout) == {
        "context": ["example.org"],
        "bundles": ["example.org"],
    }, result.stdout + result.stderr


def test_dropping_a_federated_bundle_redacts_it_from_the_open_stream(
    workload_server: WorkloadServer,
) -> None:
    # given a py-spiffe stream holding partner.org's bundle (this test runs last: it mutates)
    updates: queue.Queue[X509Context] = queue.Queue()
    errors: queue.Queue[Exception] = queue.Queue()
    partner = SpiffeTrustDomain("partner.org")
    with WorkloadApiClient(socket_path=workload_server.endpoint) as client:
        handler = client.stream_x509_contexts(updates.put, errors.put)
        try:
            first = updates.get(timeout=20)
            assert first.x509_bundle_set.get_bundle_for_trust_domain(partner) is not None

            # when the agent stops holding it
            assert workload_server.command("drop-federated partner.org") == "FEDERATED"

            # then the next complete message no longer has it (4.4: absence is redaction)
            second = updates.get(timeout=20)
        finally:
            handler.cancel()
    assert errors.empty()
    assert second.x509_bundle_set.get_bundle_for_trust_domain(partner) is None
