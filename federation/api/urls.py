"""Routes of the federation app: the public bundle endpoint and /api/v1/federation-relationships."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from federation.api.views import FederationRelationshipViewSet, bundle_endpoint

router = SimpleRouter(trailing_slash=False)
router.register(
    "api/v1/federation-relationships",
    FederationRelationshipViewSet,
    basename="federation-relationship",
)

urlpatterns = [
    path("bundle/<str:trust_domain>", bundle_endpoint, name="bundle-endpoint"),
    *router.urls,
    path("", include("federation.managed.api.urls")),
]
