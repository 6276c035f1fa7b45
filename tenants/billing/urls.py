"""Routes of metering and billing: tenant ones under /api/v1/, operator ones under /operator/."""

from django.urls import path

from tenants.billing.api import InvoiceDetailView, InvoiceListView
from tenants.metering.api import UsageView

urlpatterns = [
    path("usage", UsageView.as_view(), name="usage"),
    path("invoices", InvoiceListView.as_view(), name="invoice-list"),
    path("invoices/<uuid:pk>", InvoiceDetailView.as_view(), name="invoice-detail"),
]
