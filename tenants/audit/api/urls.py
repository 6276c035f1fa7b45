"""Routes of the audit trail under /api/v1/."""

from django.urls import path

from tenants.audit.api.views import AuditEventList, AuditVerify, OperatorAuditEventList

urlpatterns = [
    path("audit-events", AuditEventList.as_view(), name="audit-events"),
    path("audit-events/verify", AuditVerify.as_view(), name="audit-events-verify"),
    path("operator/audit-events", OperatorAuditEventList.as_view(), name="operator-audit-events"),
]
