"""Routes of the operator API under /api/v1/operator/."""

from django.urls import path

from tenants.api.operator import OperatorTenantDetail, OperatorTenantList

urlpatterns = [
    path("tenants", OperatorTenantList.as_view(), name="operator-tenant-list"),
    path("tenants/<uuid:tenant_id>", OperatorTenantDetail.as_view(), name="operator-tenant-detail"),
]
