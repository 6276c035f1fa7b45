"""Private keys and key-manager credentials are found in no database row and no file of ours."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import make_tenant
from trustdomains import services
from trustdomains.keymanagers.pkcs11 import derive_pin, load_pin_secret
from trustdomains.models import X509Authority

pytestmark = pytest.mark.django_db(transaction=True)

# Headers every P-256 private key serialisation starts with: PEM, SEC1 DER, PKCS#8 DER.
PRIVATE_KEY_MARKERS = (
    b"PRIVATE KEY",
    bytes.fromhex("30770201010420"),
    bytes.fromhex("308187020100301306072a8648ce3d020106082a8648ce3d030107"),
)
MAX_FILE_BYTES = 256 * 1024 * 1024


def key_stores() -> list[Path]:
    """Where the key managers keep their own (encrypted) state: the HSM and OpenBao."""
    data_dir = Path(settings.DATA_DIR)
    return [data_dir / "softhsm" / "tokens", data_dir / "openbao"]


def files_outside_the_key_stores() -> Iterator[Path]:
    stores = key_stores()
    for path in Path(settings.DATA_DIR).rglob("*"):
        if any(path.is_relative_to(store) for store in stores):
            continue
        if path.is_file() and not path.is_symlink() and path.stat().st_size <= MAX_FILE_BYTES:
            yield path


def tenant_schema_values(handle) -> list[bytes]:
    """Every value of every row of every table in the tenant's schema, as bytes."""
    values: list[bytes] = []
    with handle.schema(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            [handle.tenant.schema_name],
        )
        for (table,) in cursor.fetchall():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from the catalogue
            for row in cursor.fetchall():
                for value in row:
                    raw = bytes(value) if isinstance(value, memoryview | bytes) else None
                    values.append(raw if raw is not None else str(value).encode())
    return values


def encodings(value: bytes) -> list[bytes]:
    return [value, base64.b64encode(value)]


def pin_secret_and_pins(tenant_id) -> tuple[list[bytes], list[bytes]]:
    """The platform PIN secret and the tenant's PKCS#11 PINs, each raw and in base64."""
    secret = load_pin_secret(
        settings.PKCS11_PIN_SECRET, settings.PKCS11_PIN_SECRET_FILE, generate=False
    )
    pins = [derive_pin(secret, tenant_id, role).encode() for role in ("user", "so")]
    return encodings(secret), [e for pin in pins for e in encodings(pin)]


def test_no_private_key_or_credential_in_the_database_or_outside_the_key_stores(
    backend, default_key_manager
):
    # given a tenant on `backend` that has signed X.509-SVIDs and JWT-SVIDs
    from tests.trustdomains.test_backends import jwt_requests, leaf_requests

    tenant = make_tenant("c")
    with tenant.schema():
        services.sign_x509_svids(leaf_requests(tenant.trust_domain, 3))
        services.mint_jwt_svids(jwt_requests(tenant.trust_domain, 3))
        authority = X509Authority.objects.get()
    assert authority.key_manager == backend
    secret, pins = pin_secret_and_pins(tenant.tenant.id)
    secret_file = Path(settings.PKCS11_PIN_SECRET_FILE)

    # when every row of the tenant's schema is read
    # then no value holds a private key, a PIN or the PIN secret
    for value in tenant_schema_values(tenant):
        for needle in (*PRIVATE_KEY_MARKERS, *secret, *pins):
            assert needle not in value

    # when every file under the data dir outside the HSM token dir and OpenBao is read
    # (PostgreSQL's files, WAL included, Redis, configs) then no private key is found, and
    # the PINs are nowhere; the PIN secret only in its own 0600 file (embedded mode)
    holding_the_key_ref = []
    for path in files_outside_the_key_stores():
        content = path.read_bytes()
        for needle in PRIVATE_KEY_MARKERS:
            assert needle not in content, f"{needle!r} found in {path}"
        for needle in pins:
            assert needle not in content, f"a PIN of the tenant found in {path}"
        if path != secret_file:
            for needle in secret:
                assert needle not in content, f"the PIN secret found in {path}"
        if authority.key_ref.encode() in content:
            holding_the_key_ref.append(path)
    # (the scan did read the database's files: the key reference is in them)
    assert any("postgres" in str(path) for path in holding_the_key_ref)
