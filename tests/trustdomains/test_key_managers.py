"""Every key operation against each backend: OpenBao transit and PKCS#11 (SoftHSM2)."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from hallmark.signing import sha256
from trustdomains.keymanagers import KeyAccessDenied, KeyManagerUnavailable

ECDSA_PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))


def test_created_key_is_a_p256_key_named_for_its_tenant_and_purpose(manager, tenant_ids):
    # given a tenant; when a key is created for it
    key_ref = manager.create_key(tenant_id=tenant_ids[0], purpose="x509")

    # then its reference names the tenant and purpose, and its public half is P-256
    assert key_ref.startswith(f"hallmark-{tenant_ids[0].hex}-x509-")
    assert isinstance(manager.signer(key_ref).public_key().curve, ec.SECP256R1)


def test_each_created_key_is_a_new_key(manager, tenant_ids):
    # given two keys created for the same tenant and purpose
    first = manager.create_key(tenant_id=tenant_ids[0], purpose="jwt")
    second = manager.create_key(tenant_id=tenant_ids[0], purpose="jwt")

    # then they are different keys
    assert first != second
    public = [manager.signer(ref).public_key().public_numbers() for ref in (first, second)]
    assert public[0] != public[1]


def test_single_signature_is_der_and_verifies_with_the_public_key(manager, tenant_ids):
    # given a signer over a fresh key
    signer = manager.signer(manager.create_key(tenant_id=tenant_ids[0], purpose="x509"))
    digest = sha256(b"to be signed")

    # when it signs one digest
    signature = signer.sign_digest(digest)

    # then the DER signature verifies with the key's public half, and only for that digest
    assert signature[0] == 0x30  # DER SEQUENCE
    signer.public_key().verify(signature, digest, ECDSA_PREHASHED)
    with pytest.raises(InvalidSignature):
        signer.public_key().verify(signature, sha256(b"something else"), ECDSA_PREHASHED)


def test_batch_signatures_all_verify_in_order(manager, tenant_ids):
    # given a signer and more digests than one transit batch holds
    signer = manager.signer(manager.create_key(tenant_id=tenant_ids[0], purpose="x509"))
    digests = [sha256(f"message {i}".encode()) for i in range(230)]

    # when they are signed at once
    signatures = signer.sign_digests(digests)

    # then each signature verifies for its own digest
    assert len(signatures) == len(digests)
    public_key = signer.public_key()
    for digest, signature in zip(digests, signatures, strict=True):
        public_key.verify(signature, digest, ECDSA_PREHASHED)


def test_public_key_is_the_same_through_every_signer_of_a_key(manager, tenant_ids):
    # given a key; when two signers read its public half
    key_ref = manager.create_key(tenant_id=tenant_ids[0], purpose="x509")
    first, second = manager.signer(key_ref), manager.signer(key_ref)

    # then both see the same key, and what one signs the other's key verifies
    assert first.public_key().public_numbers() == second.public_key().public_numbers()
    digest = sha256(b"x")
    second.public_key().verify(first.sign_digest(digest), digest, ECDSA_PREHASHED)


def test_one_tenants_credential_cannot_use_another_tenants_key(manager, tenant_ids):
    # given a key of tenant A and a key of tenant B
    tenant_a, tenant_b = tenant_ids
    key_a = manager.create_key(tenant_id=tenant_a, purpose="x509")
    key_b = manager.create_key(tenant_id=tenant_b, purpose="x509")
    digest = sha256(b"cross-tenant")

    # when A's credential is used to sign with, or read, B's key; then it is refused
    with pytest.raises(KeyAccessDenied) as raised:
        manager.signer(key_b, tenant_id=tenant_a).sign_digest(digest)
    assert raised.value.code == "key_access_denied"
    with pytest.raises(KeyAccessDenied):
        manager.signer(key_b, tenant_id=tenant_a).public_key()

    # while each tenant still signs with its own key
    for key_ref in (key_a, key_b):
        signer = manager.signer(key_ref)
        signer.public_key().verify(signer.sign_digest(digest), digest, ECDSA_PREHASHED)


def test_deleted_keys_can_no_longer_sign_and_other_tenants_keys_still_can(manager, tenant_ids):
    # given two keys of tenant A (both signing) and one of tenant B
    tenant_a, tenant_b = tenant_ids
    refs_a = [manager.create_key(tenant_id=tenant_a, purpose=p) for p in ("x509", "jwt")]
    key_b = manager.create_key(tenant_id=tenant_b, purpose="x509")
    for ref in refs_a:
        manager.signer(ref).sign_digest(sha256(b"before"))

    # when tenant A's key material is deleted
    manager.delete_keys(tenant_id=tenant_a)

    # then A's keys cannot sign any more, B's still can
    for ref in refs_a:
        with pytest.raises(KeyManagerUnavailable):
            manager.signer(ref).sign_digest(sha256(b"after"))
    assert manager.signer(key_b).sign_digest(sha256(b"after"))


def test_deleting_one_key_leaves_the_tenants_other_keys_signing(manager, tenant_ids):
    # given two keys of one tenant, and a signer already used with the first (pooled state)
    doomed, kept = (manager.create_key(tenant_id=tenant_ids[0], purpose="x509") for _ in "ab")
    manager.signer(doomed).sign_digest(sha256(b"before"))

    # when only the first is deleted
    manager.delete_key(doomed)

    # then it can no longer sign, through a new signer or the pooled one; the other still can
    with pytest.raises(KeyManagerUnavailable):
        manager.signer(doomed).sign_digest(sha256(b"after"))
    assert manager.signer(kept).sign_digest(sha256(b"after"))


def test_deleting_a_tenant_without_keys_is_harmless(manager, tenant_ids):
    # given a tenant that never had keys; when its keys are deleted; then nothing fails
    manager.delete_keys(tenant_id=tenant_ids[0])
    manager.delete_keys(tenant_id=tenant_ids[0])


def test_missing_key_store_raises_key_manager_unavailable_saying_what_to_check(
    backend, broken_manager, tenant_ids
):
    # given a manager whose key store is missing (nothing listens / no module)
    setting = {"vault": "HALLMARK_VAULT_ADDR", "pkcs11": "HALLMARK_PKCS11_MODULE"}[backend]

    # when it is asked to create a key or to sign
    # then the named error says the key manager is unavailable and which setting to check
    with pytest.raises(KeyManagerUnavailable) as raised:
        broken_manager.create_key(tenant_id=tenant_ids[0], purpose="x509")
    assert raised.value.code == "key_manager_unavailable"
    assert raised.value.http_status == 503
    assert setting in raised.value.detail
    with pytest.raises(KeyManagerUnavailable):
        broken_manager.signer(f"hallmark-{tenant_ids[0].hex}-x509-1").sign_digest(sha256(b"x"))
