"""Operator routes of metering and billing under /api/v1/operator/."""

from django.urls import path, re_path

from tenants.billing.api import (
    ClosePeriodView,
    OperatorInvoiceList,
    PlanDetailView,
    PlanListView,
)
from tenants.metering.api import OperatorUsageView

urlpatterns = [
    path("usage", OperatorUsageView.as_view(), name="operator-usage"),
    path("billing/close-period", ClosePeriodView.as_view(), name="operator-close-period"),
    path("invoices", OperatorInvoiceList.as_view(), name="operator-invoice-list"),
    path("plans", PlanListView.as_view(), name="operator-plan-list"),
    re_path(
        r"^plans/(?P<name>[a-zA-Z0-9_-]{1,64})$",
        PlanDetailView.as_view(),
        name="operator-plan-detail",
    ),
]
