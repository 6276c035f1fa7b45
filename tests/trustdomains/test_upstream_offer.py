"""Which tenants an upstream authority is offered to, and the name constraints it signs with.

All trust domains under one root trust each other's chains, so an upstream without an
operator's `trust_domains` list is offered to nobody, "embedded" only where the operator turns
it on, and each upstream-signed CA is constrained to its own trust domain (issue 7, finding 1).
"""

from __future__ import annotations

import pytest
from cryptography import x509
from django.conf import settings as django_settings

from tests.conftest import make_tenant
from tests.issuance.conftest import entry_body
from tests.trustdomains.test_upstream import upstream_file  # noqa: F401 - fixture
from trustdomains import upstream
from trustdomains.models import X509Authority

pytestmark = pytest.mark.django_db(transaction=True)


def choose(handle, name: str):  # type: ignore[no-untyped-def]
    return handle.client.patch("/api/v1/trust-domain", {"upstream_authority": name}, format="json")


def pki(**extra: object) -> dict[str, object]:
    return {
        "address": django_settings.VAULT_ADDR,
        "mount": django_settings.EMBEDDED_UPSTREAM_MOUNT,
        "token": django_settings.VAULT_TOKEN,
        **extra,
    }


def test_an_upstream_without_a_trust_domain_list_is_offered_to_no_tenant(
    tenant_a,
    tenant_b,
    upstream_file,  # noqa: F811
):
    # given an operator's upstream with no trust_domains, and one listing tenant B only
    upstream_file({"open": pki(), "for-b": pki(trust_domains=[tenant_b.trust_domain])})

    # then neither tenant may choose the unlisted one; only B the one listing it
    for handle in (tenant_a, tenant_b):
        response = choose(handle, "open")
        assert response.status_code == 400, response.content
        assert response.json()["code"] == "unknown_upstream_authority"
    refused = choose(tenant_a, "for-b")
    assert refused.status_code == 400 and refused.json()["code"] == "unknown_upstream_authority"
    assert choose(tenant_b, "for-b").status_code == 200
    assert tenant_a.client.get("/api/v1/trust-domain").json()["upstream_authority"] == ""


def test_embedded_is_offered_only_when_the_operator_turns_it_on(tenant_a, settings):
    # given the embedded upstream switched off (the default outside the demo and the tests)
    settings.EMBEDDED_UPSTREAM = False
    upstream.configured.cache_clear()
    try:
        # then a tenant cannot choose it
        response = choose(tenant_a, "embedded")
        assert response.status_code == 400
        assert response.json()["code"] == "unknown_upstream_authority"
        # when it is on, it can
        settings.EMBEDDED_UPSTREAM = True
        upstream.configured.cache_clear()
        assert choose(tenant_a, "embedded").status_code == 200
    finally:
        upstream.configured.cache_clear()


def name_constraints(handle) -> x509.NameConstraints | None:
    with handle.schema():
        ca = X509Authority.objects.get(status="active").certificate
    try:
        return ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None


def test_an_upstream_signed_ca_is_name_constrained_to_its_trust_domain(default_key_manager):
    # given a tenant whose CA the embedded upstream signed
    handle = make_tenant("nc", upstream_authority="embedded")

    # then the CA permits only DNS names under the trust domain (OpenBao 2.7 applies the DNS
    # constraint; it ignores the URI one, which Vault 1.19+ would add)
    constraints = name_constraints(handle)
    assert constraints is not None
    assert x509.DNSName(handle.trust_domain) in constraints.permitted_subtrees
    assert not [
        n
        for n in constraints.permitted_subtrees
        if isinstance(n, x509.DNSName) and n.value != handle.trust_domain
    ]

    # and entries of that tenant may carry DNS names under it only
    inside = handle.client.post(
        "/api/v1/entries",
        entry_body(handle, dns_names=[f"web.{handle.trust_domain}"]),
        format="json",
    )
    assert inside.status_code == 201, inside.content
    outside = handle.client.post(
        "/api/v1/entries", entry_body(handle, "/b", dns_names=["web.example.com"]), format="json"
    )
    assert outside.status_code == 400
    assert outside.json()["code"] == "dns_name_outside_trust_domain"


def test_an_operator_can_sign_without_the_dns_constraint(default_key_manager, upstream_file):  # noqa: F811
    # given an upstream configured without the DNS name constraint
    upstream_file({"loose": pki(trust_domains=["*"], dns_name_constraints=False)})

    # when a tenant's CA is signed by it
    handle = make_tenant("loose", upstream_authority="loose")

    # then its CA has no DNS constraint and its entries may name other hosts
    constraints = name_constraints(handle)
    assert constraints is None or not any(
        isinstance(n, x509.DNSName) for n in constraints.permitted_subtrees or ()
    )
    response = handle.client.post(
        "/api/v1/entries", entry_body(handle, dns_names=["web.example.com"]), format="json"
    )
    assert response.status_code == 201, response.content
