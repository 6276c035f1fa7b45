"""The base viewset for tenant resources; its scoping cannot be overridden by subclasses."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models
from rest_framework import viewsets
from rest_framework.request import Request

from tenants import roles
from tenants.models import Tenant
from tenants.scoping import current_tenant


class TenantResourceViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    """A tenant resource: the queryset is always the model's rows in the caller's schema.

    The bearer token has already moved the connection into the tenant's schema, so rows of
    another tenant are simply not there: "not yours" and "not found" are the same 404.
    Subclasses set `model` and must not override `get_queryset`.
    """

    model: ClassVar[type[models.Model]]
    lookup_value_regex = "[0-9a-fA-F-]{1,64}"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__ or "queryset" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} must not set queryset/get_queryset; the base class scopes "
                "tenant resources (name an escape hatch dangerously_... if one is ever needed)"
            )

    def get_queryset(self) -> models.QuerySet[Any]:
        current_tenant()  # fails loudly if the request is somehow in the public schema
        return self.model._default_manager.all()

    @property
    def tenant(self) -> Tenant:
        return self.request.tenant  # type: ignore[attr-defined,no-any-return]

    @property
    def actor(self) -> str:
        return str(getattr(self.request, "actor", "unknown"))

    @property
    def spiffe_id_prefix(self) -> str:
        """The caller's SPIFFE-ID prefix ("" for none): its entry writes stay under it."""
        return str(getattr(self.request.user, "spiffe_id_prefix", "") or "")

    def check_under_prefix(self, *spiffe_ids: object, action: str, target: str = "") -> None:
        """403 `permission_denied` for a SPIFFE ID outside the caller's prefix (audited)."""
        try:
            roles.check_under_prefix(self.spiffe_id_prefix, *spiffe_ids)
        except roles.OutsidePrefix as refused:
            from tenants.services import record_audit

            record_audit(
                tenant=self.tenant,
                actor=self.actor,
                action=action,
                target=target,
                outcome="denied",
                source=self.source(),
                detail={"code": refused.code, "detail": refused.detail[:500]},
            )
            raise

    def source(self) -> str:
        request: Request = self.request
        return str(request.META.get("REMOTE_ADDR", ""))
