"""Key managers hold the tenants' CA private keys; `get_key_manager(name)` picks a backend."""

from __future__ import annotations

import threading

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from trustdomains.keymanagers.base import KeyAccessDenied, KeyManager, KeyManagerUnavailable

# Each backend's class has `from_settings()`; TrustDomain.key_manager holds one of these names.
BACKENDS: dict[str, str] = {
    "vault": "trustdomains.keymanagers.vault.VaultTransitKeyManager",
    "pkcs11": "trustdomains.keymanagers.pkcs11.Pkcs11KeyManager",
}
_instances: dict[str, KeyManager] = {}
_lock = threading.Lock()

__all__ = [
    "BACKENDS",
    "KeyAccessDenied",
    "KeyManager",
    "KeyManagerUnavailable",
    "get_key_manager",
    "reset_key_managers",
]


def get_key_manager(name: str | None = None) -> KeyManager:
    """The process-wide key manager called `name` (settings.DEFAULT_KEY_MANAGER by default)."""
    name = name or settings.DEFAULT_KEY_MANAGER
    with _lock:
        manager = _instances.get(name)
        if manager is None:
            if name not in BACKENDS:
                raise ImproperlyConfigured(
                    f"unknown key manager {name!r}; known: {', '.join(sorted(BACKENDS))}"
                )
            manager = import_string(BACKENDS[name]).from_settings()
            _instances[name] = manager
        return manager


def reset_key_managers() -> None:
    """Forget the cached key managers (after settings change; tests)."""
    with _lock:
        _instances.clear()
