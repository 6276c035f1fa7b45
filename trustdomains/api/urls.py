"""Routes of the trustdomains app under /api/v1/."""

from django.urls import URLPattern, path

from trustdomains.api.authorities import OPERATIONS, AuthorityOperationView, PrepareAuthorityView
from trustdomains.api.views import BundleView, TrustDomainView


def _authority_routes(kind: str) -> list[URLPattern]:
    base = f"trust-domain/{kind}-authorities"
    routes = [
        path(
            f"{base}/prepare",
            PrepareAuthorityView.as_view(kind=kind),
            name=f"{kind}-authority-prepare",
        )
    ]
    routes += [
        path(
            f"{base}/<uuid:authority_id>/{operation}",
            AuthorityOperationView.as_view(kind=kind, operation=operation),
            name=f"{kind}-authority-{operation}",
        )
        for operation in OPERATIONS
    ]
    return routes


urlpatterns = [
    path("trust-domain", TrustDomainView.as_view(), name="trust-domain"),
    path("bundle", BundleView.as_view(), name="bundle"),
    *_authority_routes("x509"),
    *_authority_routes("jwt"),
]
