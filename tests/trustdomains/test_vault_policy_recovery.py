"""Tenant tokens and policies in Vault/OpenBao: a lost policy comes back, tokens are reused.

Against the real embedded OpenBao. Written to kill mutants `make mutation` found surviving in
trustdomains/keymanagers/vault.py: without the policy write in token creation, a tenant whose
policy was lost (an operator's mistake, a restore from an older snapshot) would be denied its
own keys for good; a refresh margin past the lease would mint a token for every signature.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import hvac
import pytest
from django.conf import settings

from hallmark.signing import sha256
from tests.trustdomains.test_vault_key_manager import new_tenant_id, tenant_token_accessors
from trustdomains.keymanagers import get_key_manager
from trustdomains.keymanagers.vault import (
    VaultTransitKeyManager,
    tenant_policy,
    tenant_policy_name,
)


@pytest.fixture
def manager() -> VaultTransitKeyManager:
    return get_key_manager("vault")  # type: ignore[return-value]


@pytest.fixture
def tenant_id(manager: VaultTransitKeyManager) -> Iterator[uuid.UUID]:
    tid = new_tenant_id()
    yield tid
    manager.delete_keys(tenant_id=tid)


def test_a_tenant_policy_lost_from_vault_is_written_again_with_the_next_token(
    manager: VaultTransitKeyManager, tenant_id: uuid.UUID
) -> None:
    # given a tenant that has signed with its key
    signer = manager.signer(manager.create_key(tenant_id=tenant_id, purpose="x509"))
    signer.sign_digest(sha256(b"first"))

    # when its policy disappears from Vault (its token then answers 403)
    platform = hvac.Client(url=settings.VAULT_ADDR, token=settings.VAULT_TOKEN)
    platform.sys.delete_policy(tenant_policy_name(tenant_id))

    # then the next signature re-creates the token and the policy with it, and succeeds
    assert signer.sign_digest(sha256(b"second"))
    policy = platform.sys.read_policy(tenant_policy_name(tenant_id))["data"]["rules"]
    assert policy == tenant_policy(tenant_id, manager.mount)


def test_a_tenant_token_is_reused_until_its_refresh_point(tenant_id: uuid.UUID) -> None:
    # given a key manager whose tenant tokens live 60 s (re-created after half of that)
    manager = VaultTransitKeyManager(
        address=settings.VAULT_ADDR, token=settings.VAULT_TOKEN, token_ttl=60
    )
    signer = manager.signer(manager.create_key(tenant_id=tenant_id, purpose="x509"))

    # when it signs twice in a row, well before the refresh point
    signer.sign_digest(sha256(b"first"))
    signer.sign_digest(sha256(b"second"))

    # then both signatures used one tenant token: tokens are not minted per signature
    assert len(tenant_token_accessors(tenant_id)) == 1
