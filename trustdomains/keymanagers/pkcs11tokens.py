"""The PKCS#11 library inside one process: loaded once, thread-safe, a session pool per token.

python-pkcs11 initialises the module with `C_Initialize(NULL)`, which tells it the program
is single-threaded: SoftHSM2 then runs without mutexes and two threads signing at once can
hang it. So right after loading we re-initialise the module ourselves (ctypes) with
`CKF_OS_LOCKING_OK`; a module that refuses (CKR_CANT_LOCK) is used with every call
serialised by one process-wide lock instead. Either way each session is used by one thread
at a time (checked out of its token's pool). Throughput scales with processes, not threads.

A module only sees tokens that existed when it was initialised, so a token created by
another process (signup in a web process, signing in a worker) is found by re-initialising
(`reload`), which waits for every operation in flight and drops all pooled sessions.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import ObjectClass, TokenFlag

CKF_OS_LOCKING_OK = 0x2
CKR_OK = 0x0
CKR_CANT_LOCK = 0xA
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190
LABEL_LENGTH = 32
CHECKOUT_TIMEOUT_SECONDS = 30.0


class TokenMissing(Exception):
    """No token with this label is visible to the module."""


class ModuleFailure(Exception):
    """The module could not be loaded or initialised (message says why)."""


class _InitializeArgs(ctypes.Structure):
    _fields_ = (
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("pReserved", ctypes.c_void_p),
    )


class _Gate:
    """Many operations at once, or one reload alone (a small readers/writer lock)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class PooledSession:
    """A session checked out to one thread, with the key objects it has looked up."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.private_keys: dict[str, Any] = {}

    def private_key(self, label: str) -> Any:
        key = self.private_keys.get(label)
        if key is None:
            key = self.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            self.private_keys[label] = key
        return key


class TokenPool:
    """The sessions of one token: the first logs the user in, the others share that login."""

    def __init__(self, token: Any, pin: str, max_sessions: int) -> None:
        self.token = token
        self.pin = pin
        self._max = max(1, max_sessions)
        self._cond = threading.Condition()
        # Login is per token and shared by its sessions; closing the login session logs
        # every session out, so it is opened first and closed last.
        self._login = PooledSession(token.open(rw=True, user_pin=pin))
        self._idle: list[PooledSession] = [self._login]
        self._count = 1

    @contextlib.contextmanager
    def checkout(self) -> Iterator[PooledSession]:
        pooled = self._take()
        try:
            yield pooled
        finally:
            with self._cond:
                self._idle.append(pooled)
                self._cond.notify()

    def _take(self) -> PooledSession:
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._idle or self._count < self._max, CHECKOUT_TIMEOUT_SECONDS
            ):
                raise TimeoutError(f"no free session on token {self.token.label!r}")
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return PooledSession(self.token.open(rw=True))
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def close(self) -> None:
        """Close every session (the caller holds the library exclusively)."""
        others = [s for s in self._idle if s is not self._login]
        for pooled in [*others, self._login]:
            with contextlib.suppress(pkcs11.PKCS11Error):
                pooled.session.close()
        self._idle = []


class Pkcs11Library:
    """One PKCS#11 module in this process (use `library_for(module)`)."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.thread_safe = False
        self.generation = 0
        self._lib: Any = None
        self._c: ctypes.CDLL | None = None
        self._fresh_locks()

    def _fresh_locks(self) -> None:
        self._pid = os.getpid()
        self._gate = _Gate()
        self._load_lock = threading.Lock()
        self._pools_lock = threading.Lock()
        self._serial_lock = threading.RLock()
        self._init_lock = threading.Lock()
        self._pools: dict[str, TokenPool] = {}

    # -- loading ---------------------------------------------------------------------------
    def ensure_loaded(self) -> None:
        """Load the module (again after a fork); raises ModuleFailure."""
        if self._pid != os.getpid():
            # A forked child must re-initialise the module; its parent's sessions are gone.
            self._fresh_locks()
            if self._lib is not None:
                self._initialize(finalize_first=True)
                self.generation += 1
        if self._lib is not None:
            return
        with self._load_lock:
            if self._lib is not None:
                return
            if not Path(self.module).is_file():
                raise ModuleFailure(f"the PKCS#11 module {self.module} does not exist")
            try:
                self._c = ctypes.CDLL(self.module)
                lib = pkcs11.lib(self.module)
            except (OSError, pkcs11.PKCS11Error) as exc:
                raise ModuleFailure(f"cannot load the PKCS#11 module {self.module}: {exc}") from exc
            self._lib = lib
            self._initialize(finalize_first=True)

    def _initialize(self, *, finalize_first: bool) -> None:
        assert self._c is not None
        self._c.C_Finalize.argtypes = [ctypes.c_void_p]
        self._c.C_Finalize.restype = ctypes.c_ulong
        self._c.C_Initialize.argtypes = [ctypes.c_void_p]
        self._c.C_Initialize.restype = ctypes.c_ulong
        if finalize_first:
            rv = self._c.C_Finalize(None)
            if rv not in (CKR_OK, CKR_CRYPTOKI_NOT_INITIALIZED):
                raise ModuleFailure(f"C_Finalize of {self.module} failed (CKR 0x{rv:x})")
        args = _InitializeArgs(flags=CKF_OS_LOCKING_OK)
        rv = self._c.C_Initialize(ctypes.byref(args))
        self.thread_safe = rv == CKR_OK
        if rv == CKR_CANT_LOCK:
            rv = self._c.C_Initialize(None)
        if rv != CKR_OK:
            raise ModuleFailure(f"C_Initialize of {self.module} failed (CKR 0x{rv:x})")

    def reload(self) -> None:
        """Re-initialise the module to see tokens created elsewhere; drops every session."""
        self.ensure_loaded()
        with self._gate.exclusive():
            self._pools.clear()  # C_Finalize closes their sessions
            self._initialize(finalize_first=True)
            self.generation += 1

    # -- sessions ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self, label: str, pin: str, max_sessions: int) -> Iterator[PooledSession]:
        """A logged-in session on the token labelled `label`, for this thread alone."""
        self.ensure_loaded()
        with self._gate.shared():
            pool = self._pool(label, pin, max_sessions)
            serial = contextlib.nullcontext() if self.thread_safe else self._serial_lock
            with pool.checkout() as pooled, serial:
                yield pooled

    def _pool(self, label: str, pin: str, max_sessions: int) -> TokenPool:
        with self._pools_lock:
            pool = self._pools.get(label)
            if pool is not None:
                if pool.pin != pin:
                    # Another credential for a token this process has logged in to: refuse
                    # rather than let the shared login stand in for a PIN nobody checked.
                    raise pkcs11.PinIncorrect(f"a different PIN is logged in to {label!r}")
                return pool
            pool = TokenPool(self.find_token(label), pin, max_sessions)
            self._pools[label] = pool
            return pool

    def find_token(self, label: str) -> Any:
        """The initialised token labelled `label` (slots are numbered at random)."""
        found = [
            token
            for slot in self._lib.get_slots(token_present=True)
            if (token := slot.get_token()).label == label
            and token.flags & TokenFlag.TOKEN_INITIALIZED
        ]
        if not found:
            raise TokenMissing(label)
        if len(found) > 1:
            raise pkcs11.MultipleTokensReturned(f"{len(found)} tokens are labelled {label!r}")
        return found[0]

    # -- token life ------------------------------------------------------------------------
    @contextlib.contextmanager
    def token_init_lock(self, lock_file: str | None) -> Iterator[None]:
        """Serialise token creation in this process and, with a lock file, across processes."""
        self.ensure_loaded()
        with self._init_lock, contextlib.ExitStack() as stack:
            if lock_file:
                Path(lock_file).parent.mkdir(parents=True, exist_ok=True)
                handle = stack.enter_context(open(lock_file, "a+b"))  # noqa: SIM115
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def create_token(self, label: str, *, so_pin: str, user_pin: str) -> None:
        """Initialise a free slot's token as `label` and set its user PIN."""
        with self._gate.shared():
            free = [
                slot
                for slot in self._lib.get_slots(token_present=True)
                if not slot.get_token().flags & TokenFlag.TOKEN_INITIALIZED
            ]
            if not free:
                raise ModuleFailure(f"the PKCS#11 module {self.module} has no free slot")
            self._init_token(free[0].slot_id, so_pin, label)
            token = self.find_token(label)
            with token.open(rw=True, so_pin=so_pin) as session:
                session.init_pin(user_pin)

    def _init_token(self, slot_id: int, so_pin: str, label: str) -> None:
        assert self._c is not None
        self._c.C_InitToken.argtypes = [
            ctypes.c_ulong,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        self._c.C_InitToken.restype = ctypes.c_ulong
        pin = so_pin.encode()
        padded = label.encode().ljust(LABEL_LENGTH)[:LABEL_LENGTH]
        rv = self._c.C_InitToken(slot_id, pin, len(pin), padded)
        if rv != CKR_OK:
            raise ModuleFailure(f"C_InitToken on slot {slot_id} failed (CKR 0x{rv:x})")

    def wipe_token(self, label: str, *, so_pin: str, user_pin: str, new_label: str) -> bool:
        """Destroy every object of the token, then re-initialise it (clears the user PIN)."""
        self.ensure_loaded()
        with self._gate.exclusive():
            pool = self._pools.pop(label, None)
            if pool is not None:
                pool.close()
            try:
                token = self.find_token(label)
            except TokenMissing:
                return False
            with token.open(rw=True, user_pin=user_pin) as session:
                for obj in list(session.get_objects()):
                    obj.destroy()
            self._init_token(token.slot.slot_id, so_pin, new_label)
            return True

    def close_sessions(self) -> None:
        """Close every pooled session (logs out of every token)."""
        if self._lib is None or self._pid != os.getpid():
            return
        with self._gate.exclusive():
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()


_libraries: dict[str, Pkcs11Library] = {}
_libraries_lock = threading.Lock()


def library_for(module: str) -> Pkcs11Library:
    """The process-wide handle on a PKCS#11 module (loaded lazily, on first use)."""
    with _libraries_lock:
        library = _libraries.get(module)
        if library is None:
            library = _libraries[module] = Pkcs11Library(module)
        return library
