"""/console/ (the tenant console) and /operator/ (the operator dashboards)."""

from django.urls import include, path, re_path

from console.views import (
    agents,
    audit,
    billing,
    dashboards,
    entries,
    federation,
    operator,
    overview,
    people,
)

tenant_pages = [
    path("", overview.overview, name="overview"),
    path("bundle", overview.bundle, name="bundle"),
    path("entries/", entries.entry_list, name="entries"),
    path("entries/new", entries.entry_create, name="entry-create"),
    path("entries/<uuid:entry_id>/", entries.entry_edit, name="entry-edit"),
    path("entries/<uuid:entry_id>/delete", entries.entry_delete, name="entry-delete"),
    path("agents/", agents.agent_list, name="agents"),
    path("agents/<uuid:agent_id>/ban", agents.agent_ban, name="agent-ban"),
    path("agents/<uuid:agent_id>/evict", agents.agent_evict, name="agent-evict"),
    path("join-tokens/", agents.join_tokens, name="join_tokens"),
    path("federation/", federation.federation, name="federation"),
    path(
        "federation/relationships/<uuid:relationship_id>/refresh",
        federation.refresh,
        name="federation-refresh",
    ),
    re_path(
        r"^federation/requests/(?P<request_id>[0-9a-f-]{36})/(?P<decision>approve|reject|cancel)$",
        federation.decide,
        name="federation-decide",
    ),
    path("members/", people.member_list, name="members"),
    path("members/<str:member_id>", people.member_change, name="member-change"),
    path("api-tokens/", people.api_tokens, name="api_tokens"),
    path("api-tokens/<uuid:token_id>/revoke", people.api_token_revoke, name="api-token-revoke"),
    path("audit/", audit.audit, name="audit"),
    path("audit/verify", audit.verify, name="audit-verify"),
    path("audit/export.<str:kind>", audit.export, name="audit-export"),
    path("usage/", billing.usage, name="usage"),
    path("invoices/", billing.invoices, name="invoices"),
    path(
        "invoices/<uuid:invoice_id>.<str:kind>",
        billing.invoice_download,
        name="invoice-download",
    ),
]

console_patterns = [
    path("", overview.home, name="home"),
    path("<slug:slug>/start", overview.start, name="landing"),
    path("<slug:slug>/", include(tenant_pages)),
]

operator_patterns = [
    path("", operator.tenants, name="tenants"),
    path("login", operator.login, name="login"),
    path("logout", operator.logout, name="logout"),
    path("tenants/<uuid:tenant_id>/", operator.tenant, name="tenant"),
    path("health", operator.health, name="health"),
    path("usage", dashboards.usage, name="usage"),
    path("billing", dashboards.billing, name="billing"),
    path("audit", dashboards.audit, name="audit"),
]

urlpatterns = [
    path("console/", include((console_patterns, "console"))),
    path("operator/", include((operator_patterns, "operator"))),
]
