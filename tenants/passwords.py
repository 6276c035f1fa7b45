"""Password hashing that yields the cores to the agents: a few threads of lowered CPU priority.

A password hash is slow on purpose: Argon2 with Django's parameters takes about 0.45 s of CPU
and 100 MiB, spread over up to 8 threads, so on a small machine one signup or login takes
every core for a moment. Anonymous callers start them (signup, login; a failed login hashes
too, so a miss costs what a hit does), and a burst of admitted ones is what slowed a
legitimate agent's syncs during a signup flood (benchmarks/abuse.py). Here every hash and
check runs on one of HASHING_THREADS threads per process whose nice value is raised by
`HALLMARK_PASSWORD_HASH_NICE` (10 by default; Argon2's own worker threads inherit it): on
an idle machine a hash runs as fast as before, on a busy one the agent API, the database
and the key manager go first. Bounding the threads also bounds the memory hashes hold at
once (100 MiB each). The hashes themselves are unchanged: same algorithms, same parameters,
same encoded form, so stored passwords verify as before and Django's rehash-on-login works.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.hashers import Argon2PasswordHasher, PBKDF2PasswordHasher

T = TypeVar("T")
HASHING_THREADS = 2  # hashes computed at once a process; the rest wait their turn

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_on_hashing_thread = threading.local()


def _lower_priority() -> None:
    """Mark this thread a hashing thread and raise its nice value above the process's (Linux:
    nice is per thread, and threads it starts inherit it). Raising needs no privilege; a
    failure leaves the priority as it was."""
    _on_hashing_thread.yes = True
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())  # the main thread's
    target = min(19, base + max(0, int(settings.PASSWORD_HASH_NICE)))
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), target)
    except OSError:
        pass


def _executor() -> ThreadPoolExecutor:
    global _pool  # noqa: PLW0603 - one pool a process, made on first use (after fork)
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                HASHING_THREADS, thread_name_prefix="password-hash", initializer=_lower_priority
            )
        return _pool


def _after_fork() -> None:
    global _pool  # noqa: PLW0603 - a forked child has none of its parent's threads
    _pool = None


os.register_at_fork(after_in_child=_after_fork)


def run_hashing(work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` on a low-priority hashing thread; its result or its exception. On such
    a thread already (a PBKDF2 check hardening its timing with an encode), run it there: a
    hash waiting for a free hashing thread from a hashing thread could wait for ever."""
    if getattr(_on_hashing_thread, "yes", False):
        return work(*args)
    return _executor().submit(work, *args).result()


class LowPriorityArgon2PasswordHasher(Argon2PasswordHasher):
    """Django's Argon2 hasher, computed on a low-priority hashing thread."""

    def encode(self, password: str, salt: str) -> str:
        return run_hashing(super().encode, password, salt)

    def verify(self, password: str, encoded: str) -> bool:
        return run_hashing(super().verify, password, encoded)


class LowPriorityPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's PBKDF2 hasher (older hashes, checked then rehashed with Argon2), likewise."""

    def encode(self, password: str, salt: str, iterations: int | None = None) -> str:
        return run_hashing(super().encode, password, salt, iterations)

    def verify(self, password: str, encoded: str) -> bool:
        return run_hashing(super().verify, password, encoded)
