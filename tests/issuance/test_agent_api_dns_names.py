"""An SVID never names a trust domain that another tenant took after the entry was written.

Entries are checked when written (test_entry_dns_names); a tenant signing up later with a
name an older entry carries, exactly or under its wildcard, is caught when the agent mints.
"""

from __future__ import annotations

import uuid

import pytest
from cryptography import x509

from hallmark.x509svid import make_csr
from tenants import services as tenant_services
from tenants.models import AuditEvent
from tests.issuance.agent_steps import attested
from tests.issuance.conftest import create_entry

pytestmark = pytest.mark.django_db(transaction=True)


def sign_up(trust_domain: str) -> None:
    tenant_services.signup(
        name=f"Late {trust_domain}",
        trust_domain=trust_domain,
        email=f"owner@{trust_domain}",
        password="correct horse battery staple",
    )


def test_names_taken_by_a_later_tenant_get_no_svid(agent_api, tenant_a):
    # given entries of A naming a free name, a free zone's wildcard, and an ordinary name
    zone = f"zone-{uuid.uuid4().hex[:8]}.test"
    late = f"late-{uuid.uuid4().hex[:8]}.test"
    identity, _, client = attested(agent_api, tenant_a)
    exact = create_entry(tenant_a, "/exact", parent_id=identity.spiffe_id, dns_names=[late])
    wild = create_entry(tenant_a, "/wild", parent_id=identity.spiffe_id, dns_names=[f"*.{zone}"])
    plain = create_entry(
        tenant_a, "/plain", parent_id=identity.spiffe_id, dns_names=["web.example.com"]
    )

    # when other tenants sign up with those names, and A's agent asks for SVIDs
    sign_up(late)
    sign_up(f"b.{zone}")
    try:
        csr = make_csr(identity.key)
        results = {
            r.entry_id: r
            for r in client.new_svids({e["id"]: csr for e in (exact, wild, plain)}).results
        }
    finally:
        client.close()

    # then the two entries naming them get no SVID and a clear code; the other one does
    for entry in (exact, wild):
        assert not results[entry["id"]].svid_chain
        assert results[entry["id"]].error_code == "dns_name_not_allowed"
    leaf = x509.load_der_x509_certificate(results[plain["id"]].svid_chain[0])
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["web.example.com"]
    # and the refusal is audited in A's trail
    event = AuditEvent.objects.get(
        tenant=tenant_a.tenant, action="svid.x509.new", outcome="failure"
    )
    assert event.detail["code"] == "dns_name_not_allowed"
    assert sorted(event.detail["entry_ids"]) == sorted([exact["id"], wild["id"]])
