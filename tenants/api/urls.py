"""Routes of the tenants app under /api/v1/."""

from django.urls import path

from tenants.api.views import AuditEventList, SignupView

urlpatterns = [
    path("signup", SignupView.as_view(), name="signup"),
    path("audit-events", AuditEventList.as_view(), name="audit-events"),
]
