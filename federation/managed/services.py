"""Managed federation: request, approve, reject, cancel, end. Every step is in both trails.

Only public data crosses: the requester learns that the trust domain exists (its bundle is
public anyway) and, once approved, each side holds a relationship to the other whose bundle
is read live from the peer's published bundle. Nothing else of a tenant is visible to the
other, and a third tenant sees nothing of either.
"""

from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone

from federation.managed.models import FederationRequest
from federation.models import FederationRelationship
from hallmark.errors import HallmarkError, InvalidTrustDomain
from hallmark.spiffeid import TrustDomain
from tenants.events import publish_change
from tenants.models import Tenant
from tenants.scoping import get_tenant_by_trust_domain, public_schema, tenant_schema
from tenants.services import record_audit

MANAGED = FederationRelationship.Profile.MANAGED


class FederationRequestError(HallmarkError):
    code = "invalid_federation_request"


class RequestNotFound(FederationRequestError):
    code = "not_found"
    http_status = 404


class RequestConflict(FederationRequestError):
    code = "federation_request_conflict"
    http_status = 409


class NotAddressed(FederationRequestError):
    code = "permission_denied"
    http_status = 403


def _has_relationship(tenant: Tenant, trust_domain: str) -> bool:
    with tenant_schema(tenant):
        return FederationRelationship.objects.filter(trust_domain=trust_domain).exists()


def _audit_both(request: FederationRequest, *, actor: str, action: str, source: str) -> None:
    for tenant, other in (
        (request.from_tenant, request.to_trust_domain),
        (request.to_tenant, request.from_trust_domain),
    ):
        record_audit(
            tenant=tenant,
            actor=actor,
            action=action,
            target=other,
            source=source,
            detail={"request_id": str(request.id)},
        )


def create_request(
    *, tenant: Tenant, trust_domain: str, actor: str, source: str = ""
) -> FederationRequest:
    try:
        name = TrustDomain.parse(trust_domain).name
    except InvalidTrustDomain as exc:
        raise FederationRequestError(exc.detail, code=exc.code) from None
    if name == tenant.trust_domain:
        raise FederationRequestError(
            "a trust domain cannot federate with itself", code="self_federation"
        )
    target = get_tenant_by_trust_domain(name)
    if target is None:
        raise RequestNotFound(f"no tenant of this platform has the trust domain {name}")
    if _has_relationship(tenant, name) or _has_relationship(target, tenant.trust_domain):
        raise RequestConflict(
            f"a relationship with {name} exists already", code="federation_relationship_exists"
        )
    with transaction.atomic(), public_schema():
        live = FederationRequest.objects.select_for_update().filter(
            status__in=[FederationRequest.Status.PENDING, FederationRequest.Status.APPROVED]
        )
        if (
            live.filter(from_tenant=tenant, to_tenant=target).exists()
            or live.filter(from_tenant=target, to_tenant=tenant).exists()
        ):
            raise RequestConflict(
                f"a request or federation with {name} exists already",
                code="federation_request_exists",
            )
        request = FederationRequest.objects.create(
            from_tenant=tenant,
            to_tenant=target,
            from_trust_domain=tenant.trust_domain,
            to_trust_domain=target.trust_domain,
        )
        _audit_both(request, actor=actor, action="federation_request.create", source=source)
    return request


def requests_of(tenant: Tenant) -> list[FederationRequest]:
    """The tenant's incoming and outgoing requests (a third tenant's are never among them)."""
    with public_schema():
        return list(
            FederationRequest.objects.filter(from_tenant=tenant)
            | FederationRequest.objects.filter(to_tenant=tenant)
        )


def _locked(tenant: Tenant, request_id: uuid.UUID | str) -> FederationRequest:
    """The request, locked, if the tenant is a party to it; else 404 (as if absent)."""
    try:
        request_id = uuid.UUID(str(request_id))
        request = (
            FederationRequest.objects.select_for_update()
            .select_related("from_tenant", "to_tenant")
            .get(pk=request_id)
        )
    except (FederationRequest.DoesNotExist, ValueError):
        raise RequestNotFound("no such federation request") from None
    if tenant.id not in (request.from_tenant_id, request.to_tenant_id):
        raise RequestNotFound("no such federation request")
    return request


def _decide(
    *, tenant: Tenant, request_id: uuid.UUID | str, actor: str, source: str, decision: str
) -> FederationRequest:
    with transaction.atomic(), public_schema():
        request = _locked(tenant, request_id)
        addressed = request.to_tenant_id if decision != "cancelled" else request.from_tenant_id
        if tenant.id != addressed:
            who = "the requested" if decision != "cancelled" else "the requesting"
            raise NotAddressed(f"only {who} tenant may do this")
        if request.status != FederationRequest.Status.PENDING:
            raise RequestConflict(
                f"the request is {request.status}", code="federation_request_not_pending"
            )
        request.status = decision
        request.decided_at = timezone.now()
        request.decided_by = actor
        request.save(update_fields=["status", "decided_at", "decided_by"])
        if decision == FederationRequest.Status.APPROVED:
            _create_both_sides(request, actor=actor, source=source)
        _audit_both(request, actor=actor, action=f"federation_request.{decision}", source=source)
    return request


def _create_both_sides(request: FederationRequest, *, actor: str, source: str) -> None:
    for tenant, other in (
        (request.from_tenant, request.to_trust_domain),
        (request.to_tenant, request.from_trust_domain),
    ):
        with tenant_schema(tenant):
            if FederationRelationship.objects.filter(trust_domain=other).exists():
                raise RequestConflict(
                    f"{tenant.trust_domain} has a relationship with {other} already",
                    code="federation_relationship_exists",
                )
            FederationRelationship.objects.create(
                trust_domain=other, bundle_endpoint_profile=MANAGED
            )
            record_audit(
                tenant=tenant,
                actor=actor,
                action="federation.create",
                target=other,
                source=source,
                detail={"profile": MANAGED, "request_id": str(request.id)},
            )
            publish_change(tenant_id=tenant.id, kind="federation")


def approve(*, tenant: Tenant, request_id: str, actor: str, source: str = "") -> FederationRequest:
    return _decide(
        tenant=tenant, request_id=request_id, actor=actor, source=source, decision="approved"
    )


def reject(*, tenant: Tenant, request_id: str, actor: str, source: str = "") -> FederationRequest:
    return _decide(
        tenant=tenant, request_id=request_id, actor=actor, source=source, decision="rejected"
    )


def cancel(*, tenant: Tenant, request_id: str, actor: str, source: str = "") -> FederationRequest:
    return _decide(
        tenant=tenant, request_id=request_id, actor=actor, source=source, decision="cancelled"
    )


def end_federation(*, tenant: Tenant, trust_domain: str, actor: str, source: str = "") -> None:
    """Either side ends it: both relationships go, the request is `ended`, both trails say so."""
    with transaction.atomic(), public_schema():
        approved = FederationRequest.objects.select_for_update().select_related(
            "from_tenant", "to_tenant"
        )
        request = (
            approved.filter(
                status=FederationRequest.Status.APPROVED,
                from_tenant=tenant,
                to_trust_domain=trust_domain,
            ).first()
            or approved.filter(
                status=FederationRequest.Status.APPROVED,
                to_tenant=tenant,
                from_trust_domain=trust_domain,
            ).first()
        )
        sides: tuple[tuple[Tenant, str], ...]
        if request is not None:
            request.status = FederationRequest.Status.ENDED
            request.decided_at = timezone.now()
            request.decided_by = actor
            request.save(update_fields=["status", "decided_at", "decided_by"])
            _audit_both(request, actor=actor, action="federation_request.end", source=source)
            sides = (
                (request.from_tenant, request.to_trust_domain),
                (request.to_tenant, request.from_trust_domain),
            )
        else:
            sides = ((tenant, trust_domain),)
        for side, other in sides:
            with tenant_schema(side):
                deleted, _ = FederationRelationship.objects.filter(
                    trust_domain=other, bundle_endpoint_profile=MANAGED
                ).delete()
                if deleted:
                    record_audit(
                        tenant=side,
                        actor=actor,
                        action="federation.delete",
                        target=other,
                        source=source,
                        detail={"profile": MANAGED},
                    )
                    publish_change(tenant_id=side.id, kind="federation")
