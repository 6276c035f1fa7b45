"""Password hashes are computed on low-priority threads: a burst of signups or logins yields
the cores to the agent API (tenants.passwords). Real Argon2 and PBKDF2, the production list."""

from __future__ import annotations

import os
import threading
import uuid

import argon2
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password, make_password

from tenants import passwords

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test's


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.fixture
def production_hashers(settings):  # type: ignore[no-untyped-def]
    from config import settings as production

    settings.PASSWORD_HASHERS = production.PRODUCTION_PASSWORD_HASHERS
    return settings


def _lowered(nice: int) -> int:
    """The nice of a hashing thread of a process whose main thread runs at `nice` (the
    threads read the setting once, when the process's pool makes them)."""
    from django.conf import settings

    return min(19, nice + settings.PASSWORD_HASH_NICE)


@pytest.fixture
def hashing_threads(monkeypatch):  # type: ignore[no-untyped-def]
    """(thread id, nice) of each thread that ran one of Django's own hashes or checks."""
    from django.contrib.auth.hashers import Argon2PasswordHasher, PBKDF2PasswordHasher

    seen: list[tuple[int, int]] = []

    def recorded(real):  # type: ignore[no-untyped-def]
        def call(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append((threading.get_native_id(), _nice()))
            return real(self, *args, **kwargs)

        return call

    for hasher in (Argon2PasswordHasher, PBKDF2PasswordHasher):
        for name in ("encode", "verify"):
            monkeypatch.setattr(hasher, name, recorded(getattr(hasher, name)))
    return seen


def test_a_hash_and_its_check_run_on_a_thread_of_lowered_priority(
    production_hashers, hashing_threads
) -> None:
    caller = (threading.get_native_id(), _nice())

    encoded = make_password(PASSWORD)
    right = check_password(PASSWORD, encoded)
    wrong = check_password("not the password", encoded)

    assert encoded.startswith("argon2$") and right and not wrong
    assert len(hashing_threads) == 3  # the hash and both checks
    for thread, nice in hashing_threads:
        assert thread != caller[0]
        assert nice == _lowered(caller[1]) > caller[1]


def test_hashes_are_djangos_own_so_stored_passwords_still_verify(production_hashers) -> None:
    from django.contrib.auth.hashers import Argon2PasswordHasher, PBKDF2PasswordHasher

    stock_argon2 = Argon2PasswordHasher().encode(PASSWORD, "saltsaltsaltsalt")
    stock_pbkdf2 = PBKDF2PasswordHasher().encode(PASSWORD, "saltsaltsaltsalt", 1000)

    assert check_password(PASSWORD, stock_argon2)
    assert check_password(PASSWORD, stock_pbkdf2)
    assert not check_password("wrong", stock_pbkdf2)
    assert (
        passwords.LowPriorityArgon2PasswordHasher().encode(PASSWORD, "saltsaltsaltsalt")
        == stock_argon2
    )


def test_an_older_pbkdf2_hash_is_checked_at_low_priority_and_rehashed_with_argon2(
    production_hashers, hashing_threads
) -> None:
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    user = get_user_model()(username=f"old-{uuid.uuid4().hex}@example.com")
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, "saltsaltsaltsalt", 1000)
    user.save = lambda **kwargs: None  # type: ignore[method-assign] - no database here
    hashing_threads.clear()

    assert user.check_password(PASSWORD)

    assert user.password.startswith("argon2$")
    # the PBKDF2 check and the Argon2 rehash (Django may also harden the timing with a
    # PBKDF2 encode): every one of them on a low-priority thread
    assert len(hashing_threads) >= 2
    assert all(nice == _lowered(_nice()) > _nice() for _, nice in hashing_threads)


def test_a_failure_inside_the_hash_reaches_the_caller(production_hashers) -> None:
    with pytest.raises(argon2.exceptions.InvalidHashError):
        check_password(PASSWORD, "argon2$not-a-hash")


def test_at_most_two_hashes_a_process_at_once(production_hashers) -> None:
    running, most = 0, 0
    lock = threading.Lock()
    release = threading.Event()

    def held() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(5)
        with lock:
            running -= 1

    callers = [threading.Thread(target=passwords.run_hashing, args=(held,)) for _ in range(5)]
    for caller in callers:
        caller.start()
    threading.Timer(0.5, release.set).start()
    for caller in callers:
        caller.join(10)

    assert most == passwords.HASHING_THREADS == 2


def test_a_hash_that_hashes_again_inside_runs_on_its_own_thread_not_waiting_for_another(
    production_hashers,
) -> None:
    """Django's PBKDF2 check calls encode inside verify; with every hashing thread in such a
    check, an inner hash queued for a free thread would wait for ever."""
    inner_threads: list[int] = []
    started = threading.Barrier(passwords.HASHING_THREADS + 1, timeout=5)

    def outer() -> None:
        started.wait()  # every hashing thread busy in an outer hash at once
        inner_threads.append(passwords.run_hashing(threading.get_native_id))

    callers = [
        threading.Thread(target=passwords.run_hashing, args=(outer,))
        for _ in range(passwords.HASHING_THREADS)
    ]
    for caller in callers:
        caller.start()
    started.wait()
    for caller in callers:
        caller.join(5)

    assert not any(caller.is_alive() for caller in callers)
    assert len(inner_threads) == passwords.HASHING_THREADS
