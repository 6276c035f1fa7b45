"""Routes of the issuance app under /api/v1/."""

from rest_framework.routers import SimpleRouter

from issuance.api.node_attestors import NodeAttestorViewSet
from issuance.api.views import AgentViewSet, EntryViewSet, JoinTokenViewSet

router = SimpleRouter(trailing_slash=False)
router.register("entries", EntryViewSet, basename="entry")
router.register("join-tokens", JoinTokenViewSet, basename="join-token")
router.register("agents", AgentViewSet, basename="agent")
router.register("node-attestors", NodeAttestorViewSet, basename="node-attestor")

urlpatterns = router.urls
