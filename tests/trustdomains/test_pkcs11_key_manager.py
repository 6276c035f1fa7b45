"""The PKCS#11 key manager against Debian's SoftHSM2: tokens, PINs, key attributes, threads."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from django.conf import settings
from pkcs11 import Attribute, ObjectClass

from hallmark.signing import sha256
from trustdomains.keymanagers import KeyAccessDenied
from trustdomains.keymanagers.pkcs11 import (
    Pkcs11KeyManager,
    derive_pin,
    load_pin_secret,
    token_label,
)
from trustdomains.keymanagers.pkcs11tokens import library_for

ECDSA_PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
SOFTHSM_DIR = Path(settings.DATA_DIR) / "softhsm"


@pytest.fixture
def tenant_id(pkcs11_manager):
    tid = uuid.uuid4()
    yield tid
    pkcs11_manager.delete_keys(tenant_id=tid)


@pytest.fixture
def other_tenant_id(pkcs11_manager):
    tid = uuid.uuid4()
    yield tid
    pkcs11_manager.delete_keys(tenant_id=tid)


def pin_secret() -> bytes:
    return load_pin_secret(
        settings.PKCS11_PIN_SECRET, settings.PKCS11_PIN_SECRET_FILE, generate=False
    )


def test_private_key_is_generated_on_the_token_sensitive_and_never_extractable(
    pkcs11_manager, tenant_id
):
    # given a key created for a tenant
    key_ref = pkcs11_manager.create_key(tenant_id=tenant_id, purpose="x509")

    # when its objects on the tenant's token are inspected
    with pkcs11_manager.session(tenant_id) as pooled:
        private = pooled.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key_ref)
        public = pooled.session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=key_ref)

        # then the private half was made on the token and can never leave it
        assert private[Attribute.ID] == key_ref.encode()
        assert private[Attribute.TOKEN] is True
        assert private[Attribute.PRIVATE] is True
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.ALWAYS_SENSITIVE] is True
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        assert private[Attribute.LOCAL] is True
        with pytest.raises(pkcs11.AttributeSensitive):
            private[Attribute.VALUE]  # noqa: B018 - reading it is the test
        assert public[Attribute.TOKEN] is True


def test_each_tenant_gets_a_token_of_its_own(pkcs11_manager, tenant_id, other_tenant_id):
    # given keys for two tenants
    for tid in (tenant_id, other_tenant_id):
        pkcs11_manager.create_key(tenant_id=tid, purpose="x509")

    # when each tenant's token is opened with its own PIN
    # then each token holds exactly that tenant's key pair
    for tid in (tenant_id, other_tenant_id):
        with pkcs11_manager.session(tid) as pooled:
            assert pooled.session.token.label == token_label(tid)
            labels = {o[Attribute.LABEL] for o in pooled.session.get_objects()}
            assert len(labels) == 1
            assert labels.pop().startswith(f"hallmark-{tid.hex}-x509-")


def test_one_tenants_pin_does_not_open_another_tenants_token(
    pkcs11_manager, tenant_id, other_tenant_id
):
    # given two tenants with tokens, and no session logged in to either
    for tid in (tenant_id, other_tenant_id):
        pkcs11_manager.create_key(tenant_id=tid, purpose="x509")
    pkcs11_manager.close_sessions()
    secret = pin_secret()
    library = library_for(settings.PKCS11_MODULE)
    token_b = library.find_token(token_label(other_tenant_id))

    # when tenant B's token is opened with tenant A's PIN; then the token refuses it
    with pytest.raises(pkcs11.PinIncorrect):
        token_b.open(user_pin=derive_pin(secret, tenant_id, "user"))
    # and the PINs differ per tenant and per role
    pins = {derive_pin(secret, t, r) for t in (tenant_id, other_tenant_id) for r in ("user", "so")}
    assert len(pins) == 4


def test_a_different_pin_secret_is_refused_by_the_tenants_token(pkcs11_manager, tenant_id):
    # given a tenant key, and a key manager with another platform PIN secret
    key_ref = pkcs11_manager.create_key(tenant_id=tenant_id, purpose="x509")
    impostor = Pkcs11KeyManager(module=settings.PKCS11_MODULE, pin_secret=b"not the secret")

    # when it tries to sign with the key, with this process logged in and after logging out
    # then the token refuses, and the error says which secret to check
    for logged_in in (True, False):
        if not logged_in:
            pkcs11_manager.close_sessions()
        with pytest.raises(KeyAccessDenied) as raised:
            impostor.signer(key_ref).sign_digest(sha256(b"x"))
        assert "HALLMARK_PKCS11_PIN_SECRET" in raised.value.detail
    assert pkcs11_manager.signer(key_ref).sign_digest(sha256(b"x"))


def test_four_threads_signing_at_once_neither_hang_nor_make_bad_signatures(
    pkcs11_manager, tenant_id, other_tenant_id
):
    # given keys on two tenants' tokens and four threads signing with them for two seconds
    refs = [pkcs11_manager.create_key(tenant_id=t, purpose="x509") for t in (tenant_id, tenant_id)]
    refs.append(pkcs11_manager.create_key(tenant_id=other_tenant_id, purpose="x509"))
    signers = [pkcs11_manager.signer(refs[i % len(refs)]) for i in range(4)]
    results: list[list[tuple[bytes, bytes]]] = [[] for _ in signers]
    errors: list[BaseException] = []
    stop_at = time.monotonic() + 2.0

    def sign(index: int) -> None:
        try:
            n = 0
            while time.monotonic() < stop_at:
                digest = sha256(f"{index}:{n}".encode())
                if n % 10:
                    results[index].append((digest, signers[index].sign_digest(digest)))
                else:
                    batch = [sha256(f"{index}:{n}:{j}".encode()) for j in range(5)]
                    sigs = signers[index].sign_digests(batch)
                    results[index].extend(zip(batch, sigs, strict=True))
                n += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sign, args=(i,), daemon=True) for i in range(4)]

    # when they run (while a fifth thread creates another tenant's token, which re-scans)
    for thread in threads:
        thread.start()
    newcomer = uuid.uuid4()
    try:
        pkcs11_manager.create_key(tenant_id=newcomer, purpose="x509")
        for thread in threads:
            thread.join(timeout=60)
    finally:
        pkcs11_manager.delete_keys(tenant_id=newcomer)

    # then none hung or failed, and every signature verifies with its signer's key
    assert not [t for t in threads if t.is_alive()], "a signing thread hung"
    assert errors == []
    for signer, signed in zip(signers, results, strict=True):
        assert signed
        public_key = signer.public_key()
        for digest, signature in signed:
            public_key.verify(signature, digest, ECDSA_PREHASHED)


def test_key_created_in_one_process_signs_in_another_that_loaded_the_module_earlier(
    pkcs11_manager, tenant_id, tmp_path
):
    # given a worker process that loaded the module before the tenant's token existed
    script = textwrap.dedent(
        """
        import sys, uuid
        import django
        django.setup()
        from trustdomains.keymanagers import get_key_manager
        manager = get_key_manager("pkcs11")
        manager.delete_keys(tenant_id=uuid.uuid4())  # loads the module, sees current tokens
        print("ready", flush=True)
        key_ref = sys.stdin.readline().strip()
        print(manager.signer(key_ref).sign_digest(bytes(32)).hex(), flush=True)
        """
    )
    env = {
        **os.environ,  # the embedded servers' addresses, SOFTHSM2_CONF
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "HALLMARK_EMBEDDED": "true",  # as `hallmark up` tells the processes it starts
        "PYTHONPATH": str(settings.BASE_DIR),
    }
    worker = subprocess.Popen(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=settings.BASE_DIR,
    )
    try:
        assert worker.stdout is not None and worker.stdin is not None
        assert worker.stdout.readline().strip() == "ready"

        # when this process creates the tenant's token and key, and the worker signs with it
        key_ref = pkcs11_manager.create_key(tenant_id=tenant_id, purpose="x509")
        worker.stdin.write(key_ref + "\n")
        worker.stdin.flush()
        signature = bytes.fromhex(worker.stdout.readline().strip())
    finally:
        worker.stdin.close()  # type: ignore[union-attr]
        worker.wait(timeout=60)

    # then the worker found the new token and its signature verifies
    pkcs11_manager.signer(key_ref).public_key().verify(signature, bytes(32), ECDSA_PREHASHED)


def test_embedded_mode_keeps_softhsm_config_tokens_and_pin_secret_private_in_the_data_dir(
    pkcs11_manager, tenant_id
):
    # given a key made in the embedded mode
    pkcs11_manager.create_key(tenant_id=tenant_id, purpose="x509")

    # then SoftHSM2 uses a config and token dir of Hallmark's own under the data dir
    conf = SOFTHSM_DIR / "softhsm2.conf"
    assert os.environ["SOFTHSM2_CONF"] == str(conf)
    assert f"directories.tokendir = {SOFTHSM_DIR / 'tokens'}" in conf.read_text()
    assert any((SOFTHSM_DIR / "tokens").iterdir())
    # and the generated PIN secret is readable by its owner only
    secret_file = Path(settings.PKCS11_PIN_SECRET_FILE)
    assert secret_file.parent == SOFTHSM_DIR
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(secret_file.read_text().strip()) == 64


def test_pin_secret_from_the_environment_wins_over_the_file(tmp_path):
    # given both a secret and a secret file; when the secret is loaded; then the given one wins
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    assert load_pin_secret("from-env", str(secret_file), generate=False) == b"from-env"
    assert load_pin_secret(None, str(secret_file), generate=False) == b"from-file"
