"""Fuzzing the agent API's protobufs over a real channel: a clear status, never a crash or a hang.

Every RPC of the AgentAPI service descriptor (so a new RPC is fuzzed without touching this
file) gets random bytes as its serialized request, sent raw (identity serializers) over a
real TLS gRPC channel to a real AgentApiServer; then random well-typed requests, built from
the message descriptors, go to AttestAgent without a client certificate and to the other
RPCs with a valid agent SVID. Each answer must be OK or one of the statuses the boundary
maps errors to; UNKNOWN or INTERNAL is an unhandled exception, and a call that outlives its
deadline is a hang (issue 7: "every input gives a clear error or a valid result").
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from attestors.node import join_token
from hallmark.protos import agent_pb2
from hallmark.x509svid import make_csr
from tests.issuance.agent_steps import attested
from tests.issuance.agentapi_harness import AgentApiClient, running_server
from tests.issuance.conftest import bundle_pem, create_entry
from tests.security.conftest import two_tenants

pytestmark = pytest.mark.django_db
SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentAPI"]
RPCS = [method.name for method in SERVICE.methods]
UNAUTHENTICATED_RPCS = {"AttestAgent"}  # the proto's contract, as in test_agent_api_matrix
CALL_TIMEOUT = 10.0  # far beyond any answer; DEADLINE_EXCEEDED means the server hung
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE,  # a refused handshake
}
# Modest and reproducible: the same inputs every run, no example database in the work tree;
# no per-example deadline (the per-call timeout is the hang check, speed is for benchmarks/).
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # the autouse ones reset state the fuzz never uses
    ],
)


# -- the world: one tenant, one real server, an attested agent with an entry --------------------
@dataclass
class FuzzWorld:
    trust_domain: str
    anonymous: AgentApiClient  # TLS without a client certificate
    agent: AgentApiClient  # mTLS with a valid agent SVID
    entry_id: str

    def fill(self, message: Any) -> Any:
        """`message` with the placeholders of HINTS replaced by this world's values."""
        values = {TRUST_DOMAIN: self.trust_domain, ENTRY_ID: self.entry_id}
        for field, value in message.ListFields():
            if field.type == FieldDescriptor.TYPE_STRING and field.is_repeated:
                value[:] = [values.get(v, v) for v in value]
            elif field.type == FieldDescriptor.TYPE_STRING:
                setattr(message, field.name, values.get(value, value))
            elif field.type == FieldDescriptor.TYPE_MESSAGE and not (
                field.message_type.GetOptions().map_entry
            ):
                for nested in value if field.is_repeated else [value]:
                    self.fill(nested)
        return message


@pytest.fixture(scope="module")
def world(module_db: None) -> Iterator[FuzzWorld]:
    from django.conf import settings as django_settings

    # Failed attestations are the fuzz's bread: keep the per-source limit out of the way, or
    # every AttestAgent after the twentieth would be refused before its input is read.
    limit = django_settings.ATTEST_FAILURE_LIMIT
    django_settings.ATTEST_FAILURE_LIMIT = 1_000_000
    try:
        with two_tenants() as (a, _), running_server() as server:
            identity, _, agent = attested(server, a)
            entry = create_entry(a, "/fuzzed", parent_id=identity.spiffe_id)
            anonymous = AgentApiClient(
                server.port, server_name=a.trust_domain, roots_pem=bundle_pem(a)
            )
            try:
                yield FuzzWorld(
                    trust_domain=a.trust_domain,
                    anonymous=anonymous,
                    agent=agent,
                    entry_id=entry["id"],
                )
            finally:
                anonymous.close()
                agent.close()
    finally:
        django_settings.ATTEST_FAILURE_LIMIT = limit


# -- one raw call --------------------------------------------------------------------------------
def outcome(client: AgentApiClient, rpc: str, payload: bytes) -> tuple[grpc.StatusCode, str]:
    """Send `payload` as the serialized request of `rpc`; the status (a stream: its first
    message's) and details."""
    path = f"/{SERVICE.full_name}/{rpc}"
    options = {"metadata": client.metadata, "timeout": CALL_TIMEOUT}
    try:
        if SERVICE.methods_by_name[rpc].client_streaming:  # AttestAgent: one message, then end
            stream = client.channel.stream_stream(path)(iter([payload]), **options)
            try:
                next(stream, None)
            finally:
                stream.cancel()
        elif SERVICE.methods_by_name[rpc].server_streaming:
            stream = client.channel.unary_stream(path)(payload, **options)
            try:
                next(stream, None)
            finally:
                stream.cancel()
        else:
            client.channel.unary_unary(path)(payload, **options)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def assert_clear(client: AgentApiClient, rpc: str, payload: bytes) -> None:
    code, details = outcome(client, rpc, payload)
    event(f"{rpc}: {code.name} {details.split(':', 1)[0][:40]}")  # --hypothesis-show-statistics
    said = f"{rpc} answered {code.name} ({details[:300]!r}) to {payload[:200]!r}"
    assert code in ALLOWED, said
    if code != grpc.StatusCode.OK:
        slug = details.split(":", 1)[0]
        assert slug and slug.replace("_", "").isalnum(), f"no error code: {said}"


# -- well-typed requests from the message descriptors -------------------------------------------
_INTS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# Oversized, but inside gRPC's 4 MiB message limit: the server's own size checks must answer.
_LARGE_SIZES = st.sampled_from([1_025, 65_537, 300_000])


def _scalar(field: FieldDescriptor, hints: dict[str, list[Any]]) -> st.SearchStrategy[Any]:
    known = hints.get(field.name, [])
    if field.type == FieldDescriptor.TYPE_STRING:
        base: st.SearchStrategy[Any] = st.text(max_size=40) | _LARGE_SIZES.map(lambda n: "é" * n)
    elif field.type == FieldDescriptor.TYPE_BYTES:
        base = st.binary(max_size=64) | _LARGE_SIZES.map(lambda n: b"\x30" * n)
    elif field.type == FieldDescriptor.TYPE_BOOL:
        base = st.booleans()
    elif field.type in _INTS:
        low, high = _INTS[field.type]
        base = st.integers(low, high) | st.sampled_from([low, -1, 0, 1, high])
    elif field.type == FieldDescriptor.TYPE_ENUM:
        base = st.sampled_from([v.number for v in field.enum_type.values])
    elif field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        base = st.floats(width=32 if field.type == FieldDescriptor.TYPE_FLOAT else 64)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, hints)
    else:  # a field type this generator does not know yet: fail loudly, not silently
        raise AssertionError(f"no strategy for {field.full_name} (type {field.type})")
    return st.sampled_from(known) | base if known else base


def _field(field: FieldDescriptor, hints: dict[str, list[Any]]) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = (
            field.message_type.fields_by_name["key"],
            field.message_type.fields_by_name["value"],
        )
        return st.dictionaries(_scalar(key, hints), _scalar(value, hints), max_size=3)
    if field.is_repeated:
        return st.lists(_scalar(field, hints), max_size=4)
    return _scalar(field, hints)


def messages(descriptor: Descriptor, hints: dict[str, list[Any]]) -> st.SearchStrategy[Any]:
    """Messages of `descriptor` with any subset of fields set to random values; a field named
    in `hints` sometimes takes one of the given values (a real trust domain, a valid CSR), so
    requests get past the first checks."""
    message_class = message_factory.GetMessageClass(descriptor)
    fields = {f.name: _field(f, hints) for f in descriptor.fields}
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: message_class(**values))


# Values that get requests past the first checks: placeholders stand for what only the world
# knows (filled in by `FuzzWorld.fill` before sending), so strategies and examples are static.
TRUST_DOMAIN, ENTRY_ID = "<trust-domain>", "<entry-id>"
HINTS: dict[str, list[Any]] = {
    "trust_domain": [TRUST_DOMAIN],
    "attestation_type": ["join_token"],
    "attestation_data": [join_token.attestation_data(f"unknown-{uuid.UUID(int=7)}")],
    "csr": [make_csr(ec.generate_private_key(ec.SECP256R1()))],
    "entry_id": [ENTRY_ID, str(uuid.UUID(int=1)), "not-a-uuid"],
}


def _request_descriptor(rpc: str) -> Descriptor:
    return SERVICE.methods_by_name[rpc].input_type


def _request_class(rpc: str) -> Any:
    return message_factory.GetMessageClass(_request_descriptor(rpc))


# -- the tests -----------------------------------------------------------------------------------
@FUZZ
@given(rpc=st.sampled_from(RPCS), as_agent=st.booleans(), payload=st.binary(max_size=512))
# found: grpcio decoded requests before the servicer, so a malformed one answered UNKNOWN
@example(rpc="AttestAgent", as_agent=False, payload=b"\xff")  # truncated varint tag
@example(rpc="SyncAuthorizedEntries", as_agent=True, payload=b"\x08")  # tag without its value
@example(rpc="AttestAgent", as_agent=False, payload=b"\x0a\x02\xc3\x28")  # invalid UTF-8
@example(rpc="WatchUpdates", as_agent=True, payload=b"\xff")  # a server stream
def test_random_bytes_as_any_request_get_a_clear_status(
    world: FuzzWorld, rpc: str, as_agent: bool, payload: bytes
) -> None:
    assert_clear(world.agent if as_agent else world.anonymous, rpc, payload)


@FUZZ
@given(request=messages(_request_descriptor("AttestAgent"), HINTS))
# found: a huge trust_domain was echoed in the status detail, a trailer the client refuses
@example(request=_request_class("AttestAgent")(trust_domain="é" * 1_000_000))
def test_random_attest_requests_without_a_client_certificate_get_a_clear_status(
    world: FuzzWorld, request: Any
) -> None:
    assert_clear(world.anonymous, "AttestAgent", world.fill(request).SerializeToString())


AGENT_REQUESTS = st.one_of(
    *(
        messages(_request_descriptor(rpc), HINTS).map(lambda m, rpc=rpc: (rpc, m))
        for rpc in RPCS
        if rpc not in UNAUTHENTICATED_RPCS
    )
)


@FUZZ
@given(call=AGENT_REQUESTS)
def test_random_requests_of_an_attested_agent_get_a_clear_status(
    world: FuzzWorld, call: tuple[str, Any]
) -> None:
    rpc, request = call
    assert_clear(world.agent, rpc, world.fill(request).SerializeToString())


def test_the_raw_channel_reaches_the_servicer(world: FuzzWorld) -> None:
    # the harness proof: a well-formed request sent raw is served, so the fuzz's refusals
    # are the server's answers to its input, not a broken channel
    sync = _request_class("SyncAuthorizedEntries")().SerializeToString()
    assert outcome(world.agent, "SyncAuthorizedEntries", sync)[0] == grpc.StatusCode.OK
    assert outcome(world.agent, "WatchUpdates", b"")[0] == grpc.StatusCode.OK
    attest = world.fill(
        _request_class("AttestAgent")(
            trust_domain=TRUST_DOMAIN,
            attestation_type="join_token",
            attestation_data=HINTS["attestation_data"][0],
            csr=HINTS["csr"][0],
        )
    )
    code, details = outcome(world.anonymous, "AttestAgent", attest.SerializeToString())
    assert (code, details.split(":")[0]) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "join_token_invalid",
    )
