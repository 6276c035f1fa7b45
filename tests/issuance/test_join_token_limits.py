"""Join token TTLs: the exact limits, refusals made by the service itself, the audit row.

Written to kill the mutants `make mutation` found surviving in
issuance/services/join_tokens.py. The limits are checked through the REST API (both ends
accepted, one past each refused) and through the service, since the serializer in front of it
already refuses some types.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from issuance.errors import InvalidJoinTokenRequest
from issuance.models import JoinToken
from issuance.services import join_tokens
from issuance.services.join_tokens import MAX_TTL_SECONDS
from tenants.models import AuditEvent
from tests.conftest import TenantHandle

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("ttl", [1, MAX_TTL_SECONDS])
def test_a_ttl_at_either_limit_is_accepted(tenant_a: TenantHandle, ttl: int) -> None:
    before = timezone.now()
    response = tenant_a.client.post("/api/v1/join-tokens", {"ttl": ttl}, format="json")

    assert response.status_code == 201, response.content
    with tenant_a.schema():
        token = JoinToken.objects.get()
    assert before + dt.timedelta(seconds=ttl) <= token.expires_at
    assert token.expires_at <= timezone.now() + dt.timedelta(seconds=ttl)
    # and the creation is in the tenant's audit trail, with its ttl
    event = AuditEvent.objects.get(action="join_token.create", target=str(token.id))
    assert (event.tenant_id, event.source) == (tenant_a.tenant.pk, "127.0.0.1")
    assert event.detail == {"ttl": ttl, "spiffe_id": ""}


@pytest.mark.parametrize("ttl", [MAX_TTL_SECONDS + 1, -1, True, 1.5, "60"])
def test_the_service_refuses_a_ttl_out_of_range_or_not_a_whole_number(
    tenant_a: TenantHandle, ttl: object
) -> None:
    with tenant_a.schema(), pytest.raises(InvalidJoinTokenRequest) as raised:
        join_tokens.create_join_token(tenant=tenant_a.tenant, actor="test", ttl=ttl)

    assert raised.value.code == "invalid_ttl"
    with tenant_a.schema():
        assert JoinToken.objects.count() == 0
