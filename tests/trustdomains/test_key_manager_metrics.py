"""Key-manager calls are timed and their failures counted, on OpenBao transit and SoftHSM2."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import REGISTRY

from hallmark.signing import sha256
from trustdomains.keymanagers import KeyAccessDenied, KeyManagerUnavailable

LATENCY = "hallmark_key_manager_call_duration_seconds_count"
ERRORS = "hallmark_key_manager_errors_total"


def calls(kind: str, operation: str) -> float:
    labels = {"kind": kind, "operation": operation}
    return REGISTRY.get_sample_value(LATENCY, labels) or 0.0


def errors(kind: str, operation: str, code: str) -> float:
    labels = {"kind": kind, "operation": operation, "code": code}
    return REGISTRY.get_sample_value(ERRORS, labels) or 0.0


def test_each_real_call_is_timed_by_backend_and_operation(manager, backend, tenant_ids):
    before = {op: calls(backend, op) for op in ("create_key", "public_key", "sign")}
    failed_before = errors(backend, "sign", "key_manager_unavailable")

    # when a key is made, read and signs one batch of three digests
    signer = manager.signer(manager.create_key(tenant_id=tenant_ids[0], purpose="x509"))
    signer.public_key()
    signer.sign_digests([sha256(str(n).encode()) for n in range(3)])

    # then each operation was timed once, under the backend's own name, with no error
    assert {op: calls(backend, op) - before[op] for op in before} == {
        "create_key": 1,
        "public_key": 1,
        "sign": 1,
    }
    assert errors(backend, "sign", "key_manager_unavailable") == failed_before


def test_an_unreachable_key_manager_is_counted_as_unavailable(broken_manager, backend, tenant_ids):
    before = errors(backend, "create_key", "key_manager_unavailable")
    timed = calls(backend, "create_key")

    with pytest.raises(KeyManagerUnavailable):
        broken_manager.create_key(tenant_id=tenant_ids[0], purpose="x509")

    assert errors(backend, "create_key", "key_manager_unavailable") == before + 1
    assert calls(backend, "create_key") == timed + 1  # failed calls are timed too


def test_a_refused_tenant_credential_is_counted_without_naming_the_tenant(
    manager, backend, tenant_ids
):
    tenant_a, tenant_b = tenant_ids
    key_a = manager.create_key(tenant_id=tenant_a, purpose="x509")
    key_b = manager.create_key(tenant_id=tenant_b, purpose="x509")
    before = errors(backend, "sign", "key_access_denied")

    # when tenant A's credential is used on tenant B's key
    with pytest.raises(KeyAccessDenied):
        manager.signer(key_b, tenant_id=tenant_a).sign_digest(sha256(b"cross-tenant"))

    # then one refusal is counted, and the exposition names neither tenant nor key
    assert errors(backend, "sign", "key_access_denied") == before + 1
    text = generate_latest(REGISTRY).decode()
    for secret in (tenant_a.hex, tenant_b.hex, str(tenant_a), key_a, key_b):
        assert secret not in text
