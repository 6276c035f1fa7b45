"""A real TPM 2.0 for tests: Debian's swtpm (libtpms) on a Unix socket, driven by tpm2-tools.

Not a fake: the TPM simulator runs the TPM 2.0 reference behaviour. What a TPM maker and a
fleet's provisioning would have done is done here: the EK certificate, issued by a test
"manufacturer" CA, is written to the TCG NV index, and a DevID key is created in the TPM
(owner-hierarchy ECC primary as its parent) and certified by a test DevID CA.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from attestors.node.tpm_devid import EK_CERTIFICATE_NV_INDEX, parse_public
from tests.fakes.pki import TestCA, pem

DEVID_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"


def tools_missing() -> str | None:
    """What is missing to run a TPM here (make test installs it when root), or None."""
    for tool in ("swtpm", "tpm2_createek"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install swtpm tpm2-tools)"
    return None


@dataclass
class Swtpm:
    """One swtpm process with its own state directory; `socket` is its TPM command socket."""

    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.directory / "tpm.sock"

    @property
    def tcti(self) -> str:
        return f"swtpm:path={self.socket}"

    def start(self) -> Swtpm:
        missing = tools_missing()
        assert missing is None, missing
        state = self.directory / "state"
        state.mkdir(parents=True, exist_ok=True)
        with (self.directory / "swtpm.log").open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603
                [
                    "swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
                    "--server", f"type=unixio,path={self.socket}",
                    "--ctrl", f"type=unixio,path={self.socket}.ctrl",
                    "--flags", "not-need-init,startup-clear",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while not (self.socket.exists() and Path(f"{self.socket}.ctrl").exists()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "swtpm.log").read_text(errors="replace")
                raise RuntimeError(f"swtpm did not start: {log[-500:]}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def run(self, *args: str, cwd: Path) -> None:
        """A tpm2-tools command, then the transient objects flushed (no resource manager)."""
        env = {**os.environ, "TPM2TOOLS_TCTI": self.tcti}
        for command in ([*args], ["tpm2_flushcontext", "-t"]):
            subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)  # noqa: S603

    def provision_ek_certificate(self, manufacturer: TestCA, work: Path) -> None:
        """The TPM maker's part: an EK certificate in NV index 0x01c00002."""
        work.mkdir(parents=True, exist_ok=True)
        self.run("tpm2_createek", "-Q", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub", cwd=work)
        ek = parse_public((work / "ek.pub").read_bytes(), "ek")
        der = manufacturer.issue("tpm ek", ek.key, key_usage_signature=False).public_bytes(
            serialization.Encoding.DER
        )
        (work / "ek.der").write_bytes(der)
        self.run(
            "tpm2_nvdefine", EK_CERTIFICATE_NV_INDEX, "-C", "o", "-s", str(len(der)),
            "-a", "ownerread|ownerwrite|authread|authwrite|no_da", cwd=work,
        )  # fmt: skip
        self.run("tpm2_nvwrite", EK_CERTIFICATE_NV_INDEX, "-C", "o", "-i", "ek.der", cwd=work)

    def provision_devid(
        self,
        devid_ca: TestCA,
        cn: str,
        work: Path,
        *,
        password: str = "",
        persistent_parent: str | None = None,
        algorithm: str = "ecc",
    ) -> dict[str, Any]:
        """The fleet's part: a DevID key in the TPM, its certificate from `devid_ca` (and
        the CA's parents); the agent's `[node_attestor.tpm_devid]` settings. The parent is
        the ECC primary key tpm2_createprimary makes, made persistent at `persistent_parent`
        when given; the DevID key is `algorithm` (`ecc`: P-256, or `rsa`: RSA 2048)."""
        work.mkdir(parents=True, exist_ok=True)
        self.run("tpm2_createprimary", "-Q", "-C", "o", "-G", "ecc", "-c", "parent.ctx", cwd=work)
        parent = "parent.ctx"
        if persistent_parent is not None:
            self.run(
                "tpm2_evictcontrol", "-Q", "-C", "o", "-c", parent, persistent_parent, cwd=work
            )
            parent = persistent_parent
        self.run(
            "tpm2_create", "-Q", "-C", parent, "-G", algorithm, "-g", "sha256",
            "-u", "devid.pub", "-r", "devid.priv", "-a", DEVID_ATTRIBUTES,
            *(["-p", password] if password else []), cwd=work,
        )  # fmt: skip
        key = parse_public((work / "devid.pub").read_bytes(), "devid").key
        chain, ca = [devid_ca.issue(cn, key)], devid_ca
        while ca.parent is not None:  # intermediates after the leaf, the root left out
            chain.append(ca.cert)
            ca = ca.parent
        (work / "devid.crt.pem").write_text(pem(*chain))
        settings: dict[str, Any] = {
            "tpm_device_path": str(self.socket),
            "devid_cert_path": str(work / "devid.crt.pem"),
            "devid_pub_path": str(work / "devid.pub"),
            "devid_priv_path": str(work / "devid.priv"),
        }
        if password:
            settings["devid_password"] = password
        if persistent_parent is not None:
            settings["devid_parent"] = persistent_parent
        return settings
