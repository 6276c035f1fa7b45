"""What the agent keeps on disk in its data dir: its SVID, key (0600) and the bundle.

Files are written to a temporary name and renamed, so a crash never leaves half a key.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.state import X509Svid
from hallmark.bundle import Bundle, load_pem_certificates
from hallmark.errors import HallmarkError
from hallmark.spiffeid import TrustDomain

SVID_FILE = "agent_svid.pem"
KEY_FILE = "agent_svid.key"
BUNDLE_FILE = "bundle.json"


@dataclass(frozen=True)
class SavedAgent:
    """The agent SVID and bundle found in the data dir."""

    svid: X509Svid
    bundle: Bundle


def ensure_data_dir(data_dir: str) -> Path:
    path = Path(data_dir)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _write(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def save_svid(data_dir: str, svid: X509Svid) -> None:
    root = ensure_data_dir(data_dir)
    key = svid.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(root / KEY_FILE, key, 0o600)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in svid.chain)
    _write(root / SVID_FILE, chain, 0o644)


def save_bundle(data_dir: str, bundle: Bundle) -> None:
    _write(ensure_data_dir(data_dir) / BUNDLE_FILE, bundle.to_json(), 0o644)


def load_saved(data_dir: str, trust_domain: TrustDomain) -> SavedAgent | None:
    """The saved agent SVID and bundle, or None when there is none (first start)."""
    root = Path(data_dir)
    paths = [root / SVID_FILE, root / KEY_FILE, root / BUNDLE_FILE]
    if not all(p.exists() for p in paths):
        return None
    try:
        chain = tuple(load_pem_certificates(paths[0].read_bytes()))
        key = serialization.load_pem_private_key(paths[1].read_bytes(), password=None)
        bundle = Bundle.parse(trust_domain, paths[2].read_bytes())
    except (OSError, ValueError, HallmarkError) as exc:
        raise HallmarkError(
            f"saved agent state in {data_dir} is unreadable ({exc}); remove {SVID_FILE}, "
            f"{KEY_FILE} and {BUNDLE_FILE} and attest again with a new join token",
            code="agent_state_unreadable",
        ) from None
    if not chain or not isinstance(key, ec.EllipticCurvePrivateKey):
        raise HallmarkError(f"saved agent SVID in {data_dir} is empty or not an EC key")
    return SavedAgent(X509Svid(chain, key), bundle)
