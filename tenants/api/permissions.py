"""The one permission check of the REST API: the caller's role against the view's resource.

Applied by default (REST_FRAMEWORK's DEFAULT_PERMISSION_CLASSES). Each authenticated view
declares `permission_resource`; safe methods read it, the others write it, and
`tenants.roles.DECISIONS` answers. A view without a resource is refused (fail closed), and
the role × route test (tests/tenants/test_role_matrix.py) names it.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, permissions
from rest_framework.request import Request

from tenants import roles


class TenantSuspended(exceptions.PermissionDenied):
    """403 `tenant_suspended`: a platform operator suspended the caller's tenant."""

    default_detail = "this tenant is suspended; contact the platform operator"
    error_code = "tenant_suspended"


class RolePermission(permissions.BasePermission):
    """Tenant principals only; their role must hold (permission_resource, read|write)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.user
        if principal is None or not getattr(principal, "is_authenticated", False):
            raise exceptions.NotAuthenticated()
        if getattr(principal, "is_platform_operator", False) or not hasattr(principal, "grants"):
            raise exceptions.PermissionDenied("this route takes a tenant API token")
        if principal.tenant.status != "active":
            raise TenantSuspended()
        resource = getattr(view, "permission_resource", None)
        access = roles.access_of(request.method or "GET")
        if resource is None or not roles.allows(principal.grants, resource, access):
            _audit_denial(request, principal, resource, access)
            raise exceptions.PermissionDenied(
                f"role {principal.role!r} may not {access} {resource or 'this route'}"
            )
        return True


def _audit_denial(request: Request, principal: Any, resource: str | None, access: str) -> None:
    """A refused write lands in the tenant's trail (refused reads change nothing)."""
    if access != roles.WRITE:
        return
    from tenants.services import record_denied_write

    record_denied_write(
        tenant=principal.tenant,
        actor=str(principal),
        resource=resource or "unknown",
        path=request.path,
        role=principal.role,
        source=str(request.META.get("REMOTE_ADDR", "")),
        method=request.method,
    )
