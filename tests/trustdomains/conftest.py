"""Fixtures that run key-manager tests against each backend: OpenBao transit and SoftHSM2."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings

from trustdomains.keymanagers import KeyManager, get_key_manager
from trustdomains.keymanagers.pkcs11 import Pkcs11KeyManager
from trustdomains.keymanagers.vault import VaultTransitKeyManager

BACKENDS = ["vault", "pkcs11"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of a key-manager backend; tests using it run once per backend."""
    return str(request.param)


@pytest.fixture
def manager(backend: str) -> KeyManager:
    return get_key_manager(backend)


@pytest.fixture
def tenant_ids(manager: KeyManager) -> Iterator[list[uuid.UUID]]:
    """Fresh tenant ids (append more as needed); their keys are deleted afterwards."""
    ids = [uuid.uuid4(), uuid.uuid4()]
    yield ids
    for tenant_id in ids:
        manager.delete_keys(tenant_id=tenant_id)


@pytest.fixture
def broken_manager(backend: str) -> Any:
    """A manager of the backend whose key store is missing: a closed port, a missing module."""
    if backend == "vault":
        address = f"http://127.0.0.1:{closed_port()}"
        return VaultTransitKeyManager(address=address, token=django_settings.VAULT_TOKEN, timeout=3)
    get_key_manager("pkcs11")  # SOFTHSM2_CONF is prepared before anything loads the module
    return Pkcs11KeyManager(module="/nonexistent/libsofthsm2.so", pin_secret=b"irrelevant")


@pytest.fixture
def pkcs11_manager() -> Pkcs11KeyManager:
    manager = get_key_manager("pkcs11")
    assert isinstance(manager, Pkcs11KeyManager)
    return manager


@pytest.fixture
def default_key_manager(backend: str, settings: Any) -> str:
    """Provision trust domains made in the test with `backend` (signup reads this setting)."""
    settings.DEFAULT_KEY_MANAGER = backend
    return backend
