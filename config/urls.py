"""URL routes: the v1 REST API, its OpenAPI schema, and /healthz."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from config.health import healthz, readyz
from tenants.web import login_page, logout_page

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("login", login_page, name="login-page"),
    path("logout", logout_page, name="logout-page"),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/", include("tenants.api.urls")),
    path("api/v1/operator/", include("tenants.api.operator_urls")),
    path("api/v1/", include("tenants.audit.api.urls")),
    path("api/v1/operator/", include("tenants.billing.operator_urls")),
    path("api/v1/", include("tenants.billing.urls")),
    path("api/v1/", include("trustdomains.api.urls")),
    path("api/v1/", include("issuance.api.urls")),
    path("", include("federation.api.urls")),
    path("", include("console.urls")),  # /console/ and /operator/: the web (session + CSRF)
]

# Unknown URLs and crashes answer JSON `{code, detail}` like every API error, not HTML.
handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"
