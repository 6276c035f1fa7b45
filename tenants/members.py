"""A tenant's members: invite by email and role, accept, change a role, remove.

An invitation is a member that holds nothing yet (`Membership.active` False) and a single-use
token, stored as SHA-256, that expires (HALLMARK_INVITATION_TTL, 7 days by default).
Accepting it with the email of an existing account adds a membership to that account (the
password must be the account's); otherwise it sets the new account's password. The last
owner can neither leave nor be demoted (409 `last_owner`).
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from tenants import roles
from tenants.api.errors import ApiError
from tenants.apitokens import check_role
from tenants.models import Invitation, Membership, Tenant
from tenants.services import MIN_PASSWORD_LENGTH, record_audit
from tenants.tokens import hash_token

INVITATION_PREFIX = "hmi_"
DEFAULT_INVITATION_TTL = dt.timedelta(days=7)


@dataclass(frozen=True)
class NewInvitation:
    """The invited member and the invitation token, shown once."""

    membership: Membership
    token: str


def list_members(*, tenant: Tenant) -> list[Membership]:
    connection.set_schema_to_public()
    return list(
        Membership.objects.filter(tenant=tenant).select_related("user").order_by("created_at")
    )


def get_member(member_id: object, *, tenant: Tenant) -> Membership:
    """The tenant's member; another tenant's id answers as an unknown one (404)."""
    connection.set_schema_to_public()
    if not isinstance(member_id, int) or not 0 < member_id < 2**63:
        raise ApiError("not_found", "no such member", 404)
    member = Membership.objects.filter(pk=member_id, tenant=tenant).select_related("user").first()
    if member is None:
        raise ApiError("not_found", "no such member", 404)
    return member


def invite(
    *, tenant: Tenant, email: str, role: object, actor: str, source: str = ""
) -> NewInvitation:
    role = check_role(role)
    email = email.strip().lower()
    User = get_user_model()
    connection.set_schema_to_public()
    ttl = getattr(settings, "INVITATION_TTL_SECONDS", None)
    expires_at = timezone.now() + (dt.timedelta(seconds=ttl) if ttl else DEFAULT_INVITATION_TTL)
    token = INVITATION_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        user = User.objects.filter(username=email).first()
        if user is None:
            user = User(username=email, email=email)
            user.set_unusable_password()  # set when the invitation is accepted
            user.save()
        elif Membership.objects.filter(user=user, tenant=tenant).exists():
            raise ApiError("member_exists", f"{email} is already a member or invited", 409)
        membership = Membership.objects.create(user=user, tenant=tenant, role=role, active=False)
        Invitation.objects.create(
            tenant=tenant,
            membership=membership,
            email=email,
            role=role,
            token_hash=hash_token(token),
            invited_by=actor[:300],
            expires_at=expires_at,
        )
        record_audit(
            tenant=tenant,
            actor=actor,
            action="member.invite",
            target=email,
            source=source,
            detail={"role": role, "expires_at": expires_at.isoformat()},
        )
    return NewInvitation(membership=membership, token=token)


class _WrongPassword(Exception):
    def __init__(self, invitation: Invitation) -> None:
        self.invitation = invitation


def accept_invitation(*, token: str, password: str, source: str = "") -> Membership:
    """Make the invited member active; the invitation cannot be used again."""
    connection.set_schema_to_public()
    try:
        return _accept(token=token, password=password, source=source)
    except _WrongPassword as refused:
        invitation = refused.invitation
        record_audit(  # outside the rolled-back transaction, so the refusal is kept
            tenant=invitation.tenant,
            actor=f"user:{invitation.email}",
            action="member.accept",
            target=invitation.email,
            outcome="failure",
            source=source,
            detail={"code": "invalid_credentials"},
        )
        raise ApiError("invalid_credentials", "wrong email or password", 401) from None


def _accept(*, token: str, password: str, source: str) -> Membership:
    with transaction.atomic():
        invitation = (
            Invitation.objects.select_for_update()
            .select_related("membership__user", "tenant")
            .filter(token_hash=hash_token(token))
            .first()
        )
        if invitation is None or invitation.revoked_at is not None:
            raise ApiError("invalid_invitation", "unknown or withdrawn invitation token")
        if invitation.accepted_at is not None:
            raise ApiError("invitation_used", "this invitation was accepted already", 409)
        if invitation.expires_at <= timezone.now():
            raise ApiError("invitation_expired", "this invitation has expired; ask for a new one")
        membership = invitation.membership
        user = membership.user
        actor = f"user:{user.username}"
        if user.has_usable_password():
            # An existing account joins another tenant: only with its own password.
            if not user.check_password(password):
                raise _WrongPassword(invitation)
        else:
            if len(password) < MIN_PASSWORD_LENGTH:
                raise ApiError(
                    "weak_password", f"password must be at least {MIN_PASSWORD_LENGTH} characters"
                )
            user.set_password(password)
            user.save(update_fields=["password"])
        invitation.accepted_at = timezone.now()
        invitation.save(update_fields=["accepted_at"])
        membership.active = True
        membership.save(update_fields=["active"])
        record_audit(
            tenant=invitation.tenant,
            actor=actor,
            action="member.accept",
            target=user.username,
            source=source,
            detail={"role": membership.role},
        )
    return membership


def _owners(tenant: Tenant) -> list[int]:
    return list(
        Membership.objects.select_for_update()
        .filter(tenant=tenant, role=roles.OWNER, active=True)
        .values_list("pk", flat=True)
    )


def change_role(
    member_id: object, *, tenant: Tenant, role: object, actor: str, source: str = ""
) -> Membership:
    role = check_role(role)
    with transaction.atomic():
        member = get_member(member_id, tenant=tenant)
        owners = _owners(tenant)
        if role != roles.OWNER and member.active and owners == [member.pk]:
            raise ApiError(
                "last_owner", "the last owner cannot be demoted; make another first", 409
            )
        before = member.role
        member.role = role
        member.save(update_fields=["role"])
        Invitation.objects.filter(membership=member, accepted_at__isnull=True).update(role=role)
        record_audit(
            tenant=tenant,
            actor=actor,
            action="member.role_change",
            target=member.user.username,
            source=source,
            detail={"from": before, "to": role},
        )
    return member


def remove_member(member_id: object, *, tenant: Tenant, actor: str, source: str = "") -> None:
    """Remove a member (or withdraw an invitation); its tokens in the tenant stop working."""
    with transaction.atomic():
        member = get_member(member_id, tenant=tenant)
        if member.active and _owners(tenant) == [member.pk]:
            raise ApiError("last_owner", "the last owner cannot leave; make another first", 409)
        email = member.user.username
        member.delete()
        record_audit(
            tenant=tenant,
            actor=actor,
            action="member.remove",
            target=email,
            source=source,
            detail={"role": member.role},
        )


def member_of(user: Any, tenant: Tenant) -> Membership | None:
    return Membership.objects.filter(user=user, tenant=tenant, active=True).first()
