"""FetchBundle lists the tenant's tainted authorities (not revoked ones, never another tenant's).

Authorities are rotated and tainted through the REST forced operations, as an operator would;
the agent API is the real one (TLS relay + grpc.aio), called as an attested agent.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from tests.issuance.agent_steps import attested
from trustdomains.models import JwtAuthority, X509Authority

pytestmark = pytest.mark.django_db(transaction=True)


def _base(kind: str) -> str:
    return f"/api/v1/trust-domain/{kind}-authorities"


def _post(handle, path: str) -> dict:
    response = handle.client.post(path, format="json")
    assert response.status_code in (200, 201), response.content
    return response.json()


def rotate(handle, kind: str) -> str:
    """Prepare and activate a successor; returns the id of the (now old) authority."""
    model = X509Authority if kind == "x509" else JwtAuthority
    with handle.schema():
        old = str(model.objects.get(status="active").id)
    prepared = _post(handle, f"{_base(kind)}/prepare")
    _post(handle, f"{_base(kind)}/{prepared['id']}/activate")
    return old


def taint(handle, kind: str, authority_id: str) -> None:
    assert _post(handle, f"{_base(kind)}/{authority_id}/taint")["tainted"] is True


def rotate_and_taint(handle, kind: str) -> str:
    old = rotate(handle, kind)
    taint(handle, kind, old)
    return old


def certificate_der(handle, authority_id: str) -> bytes:
    with handle.schema():
        authority = X509Authority.objects.get(id=authority_id)
    return authority.certificate.public_bytes(serialization.Encoding.DER)


def key_id(handle, authority_id: str) -> str:
    with handle.schema():
        return JwtAuthority.objects.get(id=authority_id).key_id


def test_fetch_bundle_lists_exactly_the_tainted_authorities_until_revoked(agent_api, tenant_a):
    # given a tenant whose first X.509 and JWT authorities were rotated out (before any agent
    # connects, so the agent API's TLS trusts the new CA from the start), and an agent
    x509_old = rotate(tenant_a, "x509")
    jwt_old = rotate(tenant_a, "jwt")
    _, _, client = attested(agent_api, tenant_a)
    try:
        untainted = client.fetch_bundle()

        # when the old authorities are tainted and the agent fetches the bundle
        taint(tenant_a, "x509", x509_old)
        taint(tenant_a, "jwt", jwt_old)
        tainted = client.fetch_bundle()

        # then before the taint nothing was listed; now exactly the tainted ones are
        assert list(untainted.tainted_x509_authorities) == []
        assert list(untainted.tainted_jwt_key_ids) == []
        assert list(tainted.tainted_x509_authorities) == [certificate_der(tenant_a, x509_old)]
        assert list(tainted.tainted_jwt_key_ids) == [key_id(tenant_a, jwt_old)]
        # and they are still published in the bundle itself, under a newer sequence
        assert certificate_der(tenant_a, x509_old) in list(tainted.x509_authorities)
        assert tainted.sequence > untainted.sequence

        # when the tainted X.509 authority is revoked
        _post(tenant_a, f"{_base('x509')}/{x509_old}/revoke")
        revoked = client.fetch_bundle()

        # then it is neither published nor listed as tainted; the JWT one still is
        assert list(revoked.tainted_x509_authorities) == []
        assert certificate_der(tenant_a, x509_old) not in list(revoked.x509_authorities)
        assert list(revoked.tainted_jwt_key_ids) == [key_id(tenant_a, jwt_old)]

        # when the tainted JWT authority is revoked too
        _post(tenant_a, f"{_base('jwt')}/{jwt_old}/revoke")

        # then nothing is listed
        assert list(client.fetch_bundle().tainted_jwt_key_ids) == []
    finally:
        client.close()


def test_another_tenants_taint_never_appears_in_fetch_bundle(agent_api, tenant_a, tenant_b):
    # given tenant B rotated out and tainted its authorities; tenant A did nothing
    b_x509 = rotate_and_taint(tenant_b, "x509")
    b_jwt = rotate_and_taint(tenant_b, "jwt")

    # when an agent of each tenant fetches its bundle
    _, _, client_a = attested(agent_api, tenant_a)
    _, _, client_b = attested(agent_api, tenant_b)
    try:
        bundle_a, bundle_b = client_a.fetch_bundle(), client_b.fetch_bundle()
    finally:
        client_a.close()
        client_b.close()

    # then only B's agent sees B's taint; A's lists nothing
    assert list(bundle_b.tainted_x509_authorities) == [certificate_der(tenant_b, b_x509)]
    assert list(bundle_b.tainted_jwt_key_ids) == [key_id(tenant_b, b_jwt)]
    assert list(bundle_a.tainted_x509_authorities) == []
    assert list(bundle_a.tainted_jwt_key_ids) == []
    assert certificate_der(tenant_b, b_x509) not in list(bundle_a.x509_authorities)
