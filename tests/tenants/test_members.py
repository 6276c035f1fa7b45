"""Members and invitations: invite, accept (single-use, expiring, hashed), change, remove;
the last owner stays; a person may belong to several tenants."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from tenants.models import AuditEvent, Invitation, Membership
from tenants.tokens import hash_token
from tests.conftest import TenantHandle

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a long enough new password"


def _public() -> APIClient:
    client = APIClient()
    client.default_format = "json"
    return client


def _invite(handle: TenantHandle, email: str, role: str = "viewer") -> dict:
    answer = handle.client.post("/api/v1/members", {"email": email, "role": role}, format="json")
    assert answer.status_code == 201, answer.content
    return answer.json()


def _accept(token: str, password: str = NEW_PASSWORD):  # type: ignore[no-untyped-def]
    return _public().post(
        "/api/v1/invitations/accept", {"invitation_token": token, "password": password}
    )


def _login(email: str, password: str, tenant: str | None = None):  # type: ignore[no-untyped-def]
    body = {"email": email, "password": password, **({"tenant": tenant} if tenant else {})}
    return _public().post("/api/v1/auth/login", body)


def _owner(handle: TenantHandle) -> Membership:
    return Membership.objects.get(tenant=handle.tenant, role="owner")


def test_an_invited_person_accepts_and_logs_in_with_the_role(tenant_a: TenantHandle) -> None:
    invited = _invite(tenant_a, "Dana@Example.com", "registrar")

    listed = tenant_a.client.get("/api/v1/members").json()
    accepted = _accept(invited["invitation_token"])
    login = _login("dana@example.com", NEW_PASSWORD)

    assert invited["email"] == "dana@example.com" and invited["role"] == "registrar"
    row = next(m for m in listed if m["id"] == invited["id"])
    assert row["status"] == "invited"
    assert Invitation.objects.get(token_hash=hash_token(invited["invitation_token"]))
    assert invited["invitation_token"] not in str(tenant_a.client.get("/api/v1/members").json())
    assert accepted.status_code == 200, accepted.content
    assert accepted.json()["tenant"]["slug"] == tenant_a.tenant.slug
    assert login.status_code == 200 and login.json()["role"] == "registrar"
    actions = set(
        AuditEvent.objects.filter(tenant=tenant_a.tenant).values_list("action", flat=True)
    )
    assert {"member.invite", "member.accept", "auth.login"} <= actions


def test_an_invited_member_holds_nothing_before_accepting(tenant_a: TenantHandle) -> None:
    invited = _invite(tenant_a, "early@example.com", "admin")

    assert _login("early@example.com", NEW_PASSWORD).status_code == 401
    assert _accept(invited["invitation_token"]).status_code == 200
    assert _login("early@example.com", NEW_PASSWORD).status_code == 200


def test_an_invitation_is_single_use(tenant_a: TenantHandle) -> None:
    invited = _invite(tenant_a, "once@example.com")
    assert _accept(invited["invitation_token"]).status_code == 200

    again = _accept(invited["invitation_token"], "another password entirely")

    assert again.status_code == 409 and again.json()["code"] == "invitation_used"
    assert _login("once@example.com", NEW_PASSWORD).status_code == 200


def test_an_expired_invitation_is_refused(tenant_a: TenantHandle) -> None:
    invited = _invite(tenant_a, "late@example.com")
    Invitation.objects.filter(token_hash=hash_token(invited["invitation_token"])).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )

    answer = _accept(invited["invitation_token"])

    assert answer.status_code == 400 and answer.json()["code"] == "invitation_expired"
    assert not Membership.objects.get(pk=invited["id"]).active


def test_invitations_expire_after_seven_days_by_default(tenant_a: TenantHandle) -> None:
    invited = _invite(tenant_a, "week@example.com")

    stored = Invitation.objects.get(token_hash=hash_token(invited["invitation_token"]))

    assert (
        dt.timedelta(days=6, hours=23) < stored.expires_at - timezone.now() <= dt.timedelta(days=7)
    )


def test_an_unknown_invitation_is_refused() -> None:
    answer = _accept("hmi_" + "x" * 43)

    assert answer.status_code == 400 and answer.json()["code"] == "invalid_invitation"


def test_an_unknown_role_is_refused(tenant_a: TenantHandle) -> None:
    invite = tenant_a.client.post(
        "/api/v1/members", {"email": "r@example.com", "role": "root"}, format="json"
    )
    change = tenant_a.client.patch(
        f"/api/v1/members/{_owner(tenant_a).pk}", {"role": "root"}, format="json"
    )

    assert invite.status_code == 400 and invite.json()["code"] == "unknown_role"
    assert change.status_code == 400 and change.json()["code"] == "unknown_role"
    assert not Membership.objects.filter(tenant=tenant_a.tenant, user__username="r@example.com")


def test_an_existing_account_joins_a_second_tenant_with_its_own_password(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    a_owner = _owner(tenant_a).user.username
    invited = _invite(tenant_b, a_owner, "auditor")

    wrong = _accept(invited["invitation_token"], "not the account password")
    right = _accept(invited["invitation_token"], PASSWORD)

    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_credentials"
    assert right.status_code == 200
    assert get_user_model().objects.get(username=a_owner).check_password(PASSWORD)
    into_b = _login(a_owner, PASSWORD, tenant_b.trust_domain)
    assert into_b.json()["role"] == "auditor"
    assert _login(a_owner, PASSWORD, tenant_a.tenant.slug).json()["role"] == "owner"
    assert AuditEvent.objects.filter(
        tenant=tenant_b.tenant, action="member.accept", outcome="failure"
    ).exists()


def test_the_last_owner_can_neither_leave_nor_be_demoted(tenant_a: TenantHandle) -> None:
    owner = _owner(tenant_a)

    demote = tenant_a.client.patch(f"/api/v1/members/{owner.pk}", {"role": "admin"}, format="json")
    leave = tenant_a.client.delete(f"/api/v1/members/{owner.pk}")

    assert demote.status_code == 409 and demote.json()["code"] == "last_owner"
    assert leave.status_code == 409 and leave.json()["code"] == "last_owner"
    assert Membership.objects.get(pk=owner.pk).role == "owner"


def test_a_second_owner_lets_the_first_go(tenant_a: TenantHandle) -> None:
    invited = _invite(tenant_a, "heir@example.com", "owner")
    assert _accept(invited["invitation_token"]).status_code == 200
    owner = Membership.objects.get(tenant=tenant_a.tenant, user__username__startswith="owner-").pk

    demoted = tenant_a.client.patch(f"/api/v1/members/{owner}", {"role": "viewer"}, format="json")

    assert demoted.status_code == 200 and demoted.json()["role"] == "viewer"
    # the signup token acts for the demoted owner: it is a viewer's now
    refused = tenant_a.client.post("/api/v1/join-tokens", {"ttl": 600}, format="json")
    assert refused.status_code == 403


def test_a_removed_member_tokens_stop_working(tenant_a: TenantHandle) -> None:
    invited = _invite(tenant_a, "leaver@example.com", "admin")
    _accept(invited["invitation_token"])
    session = _login("leaver@example.com", NEW_PASSWORD).json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {session}")
    assert client.get("/api/v1/entries").status_code == 200

    assert tenant_a.client.delete(f"/api/v1/members/{invited['id']}").status_code == 204

    answer = client.get("/api/v1/entries")
    assert answer.status_code == 401 and answer.json()["code"] == "invalid_token"


def test_members_of_another_tenant_are_out_of_reach(
    tenant_a: TenantHandle, tenant_b: TenantHandle
) -> None:
    theirs = _owner(tenant_b)

    listed = tenant_a.client.get("/api/v1/members").json()
    change = tenant_a.client.patch(
        f"/api/v1/members/{theirs.pk}", {"role": "viewer"}, format="json"
    )
    remove = tenant_a.client.delete(f"/api/v1/members/{theirs.pk}")

    assert theirs.pk not in {m["id"] for m in listed}
    assert change.status_code == 404 and remove.status_code == 404
    assert Membership.objects.get(pk=theirs.pk).role == "owner"


def test_an_admin_may_not_change_members(tenant_a: TenantHandle) -> None:
    made = tenant_a.client.post(
        "/api/v1/api-tokens", {"name": "adm", "role": "admin"}, format="json"
    ).json()
    admin = APIClient()
    admin.credentials(HTTP_AUTHORIZATION=f"Bearer {made['token']}")

    invite = admin.post(
        "/api/v1/members", {"email": "x@example.com", "role": "owner"}, format="json"
    )

    assert admin.get("/api/v1/members").status_code == 200
    assert invite.status_code == 403 and invite.json()["code"] == "permission_denied"
