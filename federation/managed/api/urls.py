"""Routes of managed federation."""

from django.urls import path

from federation.managed.api.views import FederationRequestDecision, FederationRequestList

urlpatterns = [
    path("api/v1/federation-requests", FederationRequestList.as_view()),
    *(
        path(
            f"api/v1/federation-requests/<str:request_id>/{decision}",
            FederationRequestDecision.as_view(decision=decision),
        )
        for decision in ("approve", "reject", "cancel")
    ),
]
