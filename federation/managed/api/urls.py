"""Routes of managed federation."""

from django.urls import path

from federation.managed.api.views import FederationRequestDecision, FederationRequestList

urlpatterns = [
    path(
        "api/v1/federation-requests",
        FederationRequestList.as_view(),
        name="federation-request-list",
    ),
    *(
        path(
            f"api/v1/federation-requests/<uuid:request_id>/{decision}",
            FederationRequestDecision.as_view(decision=decision),
            name=f"federation-request-{decision}",
        )
        for decision in ("approve", "reject", "cancel")
    ),
]
