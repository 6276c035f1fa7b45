"""The Vault/OpenBao transit key manager against the real embedded OpenBao."""

from __future__ import annotations

import socket
import uuid

import hvac
import hvac.exceptions
import pytest
from django.conf import settings

from hallmark.signing import sha256
from trustdomains.keymanagers import (
    KeyAccessDenied,
    KeyManagerUnavailable,
    get_key_manager,
)
from trustdomains.keymanagers.vault import VaultTransitKeyManager, tenant_policy_name


def platform_client() -> hvac.Client:
    return hvac.Client(url=settings.VAULT_ADDR, token=settings.VAULT_TOKEN)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def active_key_ref(handle) -> str:
    from trustdomains.models import X509Authority

    with handle.schema():
        return X509Authority.objects.get(status="active").key_ref


@pytest.fixture
def manager() -> VaultTransitKeyManager:
    return get_key_manager("vault")  # type: ignore[return-value]


@pytest.fixture
def tenant_id(manager: VaultTransitKeyManager):
    """A tenant id with keys of its own, cleaned out of OpenBao afterwards."""
    tid = new_tenant_id()
    yield tid
    manager.delete_keys(tenant_id=tid)


def test_transit_key_is_created_non_exportable_without_plaintext_backup(manager, tenant_id):
    # given a key created for a tenant
    key_ref = manager.create_key(tenant_id=tenant_id, purpose="x509")

    # when OpenBao describes it (with the platform token)
    data = platform_client().secrets.transit.read_key(key_ref)["data"]

    # then it is a P-256 signing key that can never leave OpenBao
    assert key_ref.startswith(f"hallmark-{tenant_id.hex}-x509-")
    assert data["type"] == "ecdsa-p256"
    assert data["exportable"] is False
    assert data["allow_plaintext_backup"] is False
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not exportable"):
        platform_client().secrets.transit.export_key(key_ref, key_type="signing-key")
    with pytest.raises(hvac.exceptions.VaultError):
        platform_client().secrets.transit.backup_key(key_ref)


def test_tenant_policy_allows_only_its_own_keys(manager, tenant_id):
    # given a key of the tenant (which writes its policy)
    manager.create_key(tenant_id=tenant_id, purpose="x509")

    # when the policy is read back
    policy = platform_client().sys.read_policy(tenant_policy_name(tenant_id))["data"]["rules"]

    # then it names only sign and read of keys with the tenant's prefix
    assert f'path "transit/sign/hallmark-{tenant_id.hex}-*"' in policy
    assert f'path "transit/keys/hallmark-{tenant_id.hex}-*"' in policy
    assert policy.count("path ") == 2


def test_signatures_from_transit_verify_with_the_published_public_key(manager, tenant_id):
    # given a signer over a fresh transit key
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    signer = manager.signer(manager.create_key(tenant_id=tenant_id, purpose="x509"))
    digests = [sha256(f"message {i}".encode()) for i in range(230)]  # three batches

    # when it signs one digest and a batch
    single = signer.sign_digest(digests[0])
    batch = signer.sign_digests(digests)

    # then every DER signature verifies with the key's public half
    public_key = signer.public_key()
    assert len(batch) == len(digests)
    for digest, signature in [(digests[0], single), *zip(digests, batch, strict=True)]:
        public_key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


@pytest.mark.django_db(transaction=True)
def test_tenant_token_is_refused_on_another_tenants_key(manager, tenant_a, tenant_b):
    # given the CA keys of two tenants
    key_a, key_b = active_key_ref(tenant_a), active_key_ref(tenant_b)
    digest = sha256(b"cross-tenant")

    # when tenant A's scoped token is used to sign with, or read, B's key
    # then OpenBao refuses (403), even after the token is re-created once
    with pytest.raises(KeyAccessDenied) as raised:
        manager.signer(key_b, tenant_id=tenant_a.tenant.id).sign_digest(digest)
    assert raised.value.code == "key_access_denied"
    assert "permission denied" in raised.value.detail
    with pytest.raises(KeyAccessDenied):
        manager.signer(key_b, tenant_id=tenant_a.tenant.id).public_key()
    # while A's token still signs with A's own key
    assert manager.signer(key_a).sign_digest(digest)


# Accessors of the tokens OpenBao held when each tenant id was made: none of them can be that
# tenant's, so only newer ones are looked up (the session's OpenBao holds thousands of tokens,
# one lookup each).
_TOKENS_BEFORE: dict[uuid.UUID, frozenset[str]] = {}


def _live_accessors() -> set[str]:
    return set(platform_client().list("auth/token/accessors")["data"]["keys"])


def new_tenant_id() -> uuid.UUID:
    """A fresh tenant id; the tokens that exist now are not looked up for it later."""
    tid = uuid.uuid4()
    _TOKENS_BEFORE[tid] = frozenset(_live_accessors())
    return tid


def tenant_token_accessors(tenant_id: uuid.UUID) -> set[str]:
    """Accessors of the live OpenBao tokens created for the tenant."""
    client = platform_client()
    found = set()
    for accessor in _live_accessors() - _TOKENS_BEFORE.get(tenant_id, frozenset()):
        try:
            data = client.auth.token.lookup_accessor(accessor)["data"]
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):
            # expired meanwhile; or a token not even root may look up (OpenBao answers 403 for
            # some, e.g. response-wrapping tokens): neither is a live token of the tenant's
            continue
        if (data.get("meta") or {}).get("tenant") == str(tenant_id):
            assert data["policies"] == [tenant_policy_name(tenant_id)]
            found.add(accessor)
    return found


def test_revoked_tenant_token_is_recreated_on_403(manager, tenant_id):
    # given a signer that has signed (so its tenant token is cached)
    signer = manager.signer(manager.create_key(tenant_id=tenant_id, purpose="x509"))
    signer.sign_digest(sha256(b"first"))

    # when every token of that tenant is revoked behind the manager's back
    accessors = tenant_token_accessors(tenant_id)
    assert accessors
    for accessor in accessors:
        platform_client().auth.token.revoke_accessor(accessor)

    # then the next signature still succeeds with a freshly created token
    assert signer.sign_digest(sha256(b"second"))


def test_tenant_token_is_recreated_when_near_expiry(tenant_id):
    # given a key manager whose tenant tokens live 6 s (re-created after half of that)
    import time

    short = VaultTransitKeyManager(
        address=settings.VAULT_ADDR, token=settings.VAULT_TOKEN, token_ttl=6
    )
    signer = short.signer(short.create_key(tenant_id=tenant_id, purpose="x509"))
    signer.sign_digest(sha256(b"first"))
    first = tenant_token_accessors(tenant_id)

    # when it signs again after the token passed its refresh point
    time.sleep(3.5)
    signer.sign_digest(sha256(b"second"))

    # then a new tenant token (with only the tenant policy) was created for it
    assert len(first) == 1
    assert tenant_token_accessors(tenant_id) - first


def test_unreachable_vault_raises_key_manager_unavailable(tenant_id):
    # given a key manager pointed at a port where nothing listens
    address = f"http://127.0.0.1:{closed_port()}"
    broken = VaultTransitKeyManager(address=address, token=settings.VAULT_TOKEN, timeout=3)

    # when it is asked to create a key or to sign
    # then it says the key manager is unavailable and what to check
    with pytest.raises(KeyManagerUnavailable) as raised:
        broken.create_key(tenant_id=tenant_id, purpose="x509")
    assert raised.value.code == "key_manager_unavailable"
    assert address in raised.value.detail
    assert "HALLMARK_VAULT_ADDR" in raised.value.detail
    with pytest.raises(KeyManagerUnavailable, match="cannot reach"):
        broken.signer(f"hallmark-{tenant_id.hex}-x509-1").sign_digest(sha256(b"x"))


def test_delete_keys_removes_the_tenants_keys_policy_and_tokens(manager):
    # given a tenant with two keys and a cached token
    tid = uuid.uuid4()
    refs = [manager.create_key(tenant_id=tid, purpose="x509") for _ in range(2)]
    manager.signer(refs[0]).sign_digest(sha256(b"x"))

    # when its key material is deleted
    manager.delete_keys(tenant_id=tid)

    # then neither keys nor policy remain in OpenBao
    client = platform_client()
    for ref in refs:
        with pytest.raises(hvac.exceptions.InvalidPath):
            client.secrets.transit.read_key(ref)
    assert tenant_policy_name(tid) not in client.sys.list_acl_policies()["data"]["keys"]
