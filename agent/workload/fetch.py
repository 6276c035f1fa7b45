"""`hallmark-agent api fetch x509` and `healthcheck`: a raw gRPC Workload API client."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.config import default_socket
from hallmark.bundle import load_der_certificates
from hallmark.protos import workloadapi_pb2, workloadapi_pb2_grpc

ENDPOINT_ENV = "SPIFFE_ENDPOINT_SOCKET"
HEADER = (("workload.spiffe.io", "true"),)


class FetchError(Exception):
    """The Workload API did not answer with what was asked; `str()` is for the user."""


def socket_target(socket: str | None) -> str:
    """The gRPC target for --socket, else SPIFFE_ENDPOINT_SOCKET, else the default socket."""
    raw = socket or os.environ.get(ENDPOINT_ENV) or default_socket()
    if raw.startswith("unix://"):
        path = raw[len("unix://") :]
    elif raw.startswith("unix:"):
        path = raw[len("unix:") :]
    elif raw.startswith("/"):
        path = raw
    else:
        raise FetchError(f"{raw!r} is not a Unix socket address (unix:/path or /path)")
    if not path.startswith("/"):
        raise FetchError(f"{raw!r}: the socket path must be absolute")
    return "unix:" + path


@dataclass(frozen=True)
class FetchedSvid:
    """One X509SVID message, decoded."""

    spiffe_id: str
    chain: list[x509.Certificate]
    key_der: bytes
    bundle: list[x509.Certificate]
    hint: str


def _first(call: Any, timeout: float) -> Any:
    try:
        for message in call:
            return message
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise FetchError(f"no answer from the Workload API within {timeout:g}s") from None
        raise FetchError(f"{code.name}: {exc.details()}") from None
    finally:
        call.cancel()
    raise FetchError("the Workload API closed the stream without a message")


def fetch_x509(
    socket: str | None, timeout: float
) -> tuple[list[FetchedSvid], dict[str, list[x509.Certificate]]]:
    """The first FetchX509SVID message: the SVIDs and the federated bundles."""
    with grpc.insecure_channel(socket_target(socket)) as channel:
        stub = workloadapi_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call,unused-ignore]
        call = stub.FetchX509SVID(
            workloadapi_pb2.X509SVIDRequest(), metadata=HEADER, timeout=timeout
        )
        message = _first(call, timeout)
    svids = [
        FetchedSvid(
            spiffe_id=s.spiffe_id,
            chain=load_der_certificates(s.x509_svid),
            key_der=s.x509_svid_key,
            bundle=load_der_certificates(s.bundle),
            hint=s.hint,
        )
        for s in message.svids
    ]
    federated = {td: load_der_certificates(der) for td, der in message.federated_bundles.items()}
    return svids, federated


def health(socket: str | None, timeout: float) -> None:
    """Raise FetchError unless the Workload API answers (a PermissionDenied is an answer)."""
    with grpc.insecure_channel(socket_target(socket)) as channel:
        stub = workloadapi_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call,unused-ignore]
        call = stub.FetchX509Bundles(
            workloadapi_pb2.X509BundlesRequest(), metadata=HEADER, timeout=timeout
        )
        _first(call, timeout)


def _go_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def print_x509(svids: list[FetchedSvid], elapsed: float, out: TextIO) -> None:
    """The SVIDs as `spire-agent api fetch x509` prints them."""
    out.write(f"Received {len(svids)} svid after {elapsed * 1000:.3f}ms\n")
    for svid in svids:
        leaf = svid.chain[0]
        out.write(f"\nSPIFFE ID:\t\t{svid.spiffe_id}\n")
        if svid.hint:
            out.write(f"Hint:\t\t\t{svid.hint}\n")
        out.write(f"SVID Valid After:\t{_go_time(leaf.not_valid_before_utc)}\n")
        out.write(f"SVID Valid Until:\t{_go_time(leaf.not_valid_after_utc)}\n")
        for number, cert in enumerate(svid.chain[1:], start=1):
            out.write(
                f"Intermediate #{number} Valid After:\t{_go_time(cert.not_valid_before_utc)}\n"
            )
            out.write(
                f"Intermediate #{number} Valid Until:\t{_go_time(cert.not_valid_after_utc)}\n"
            )
        for number, cert in enumerate(svid.bundle, start=1):
            out.write(f"CA #{number} Valid After:\t{_go_time(cert.not_valid_before_utc)}\n")
            out.write(f"CA #{number} Valid Until:\t{_go_time(cert.not_valid_after_utc)}\n")
    out.write("\n")


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class OutputDir:
    """The --write directory, held open so that every file lands in the same directory.

    Each file is written to a fresh name (O_CREAT|O_EXCL|O_NOFOLLOW, never an existing file)
    and renamed over the final name: a symlink or hard link planted there by another local
    user is replaced, never followed or truncated. A directory that another user controls
    (owner, or group/other write without the sticky bit) is refused: whoever can write it
    could swap the files after they are written.
    """

    def __init__(self, directory: str) -> None:
        self.path = Path(directory)
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            raise FetchError(
                f"unsafe_output_dir: cannot open {directory} as a directory ({exc.strerror}); "
                "give a real directory, not a symlink"
            ) from None
        info = os.fstat(self._fd)
        if info.st_uid not in (os.geteuid(), 0):
            self.close()
            raise FetchError(
                f"unsafe_output_dir: {directory} belongs to uid {info.st_uid}; write into a "
                "directory you own"
            )
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            self.close()
            raise FetchError(
                f"unsafe_output_dir: {directory} is writable by group or others; use a "
                f"directory only you can write (chmod go-w {directory})"
            )

    def write(self, name: str, data: bytes, mode: int) -> None:
        temporary = f".{name}.{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temporary, flags, 0o600, dir_fd=self._fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), mode)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=self._fd)
            raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def write_x509(
    svids: list[FetchedSvid],
    federated: dict[str, list[x509.Certificate]],
    directory: str,
    out: TextIO,
) -> None:
    """svid.N.pem, svid.N.key (0600, PKCS#8), bundle.N.pem, federated_bundle.N.M.pem."""
    target = OutputDir(directory)
    try:
        for n, svid in enumerate(svids):
            key = serialization.load_der_private_key(svid.key_der, password=None)
            key_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            files = [
                (f"SVID #{n}", f"svid.{n}.pem", _pem(svid.chain), 0o644),
                (f"key #{n}", f"svid.{n}.key", key_pem, 0o600),
                (f"bundle #{n}", f"bundle.{n}.pem", _pem(svid.bundle), 0o644),
            ]
            for m, (td, certs) in enumerate(sorted(federated.items())):
                files.append(
                    (
                        f"federated bundle #{m} for trust domain {td}",
                        f"federated_bundle.{n}.{m}.pem",
                        _pem(certs),
                        0o644,
                    )
                )
            for label, name, data, mode in files:
                out.write(f"Writing {label} to file {target.path / name}.\n")
                target.write(name, data, mode)
    finally:
        target.close()


def run_fetch_x509(socket: str | None, write: str | None, timeout: float, out: TextIO) -> None:
    started = time.monotonic()
    svids, federated = fetch_x509(socket, timeout)
    print_x509(svids, time.monotonic() - started, out)
    if write:
        write_x509(svids, federated, write, out)
