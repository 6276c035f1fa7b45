"""Routes of the tenants app under /api/v1/."""

from django.urls import path

from tenants.api import people
from tenants.api.views import SignupView

urlpatterns = [
    path("signup", SignupView.as_view(), name="signup"),
    path("auth/login", people.LoginView.as_view(), name="auth-login"),
    path("auth/logout", people.LogoutView.as_view(), name="auth-logout"),
    path("api-tokens", people.ApiTokenListView.as_view(), name="api-token-list"),
    path(
        "api-tokens/<uuid:token_id>", people.ApiTokenDetailView.as_view(), name="api-token-detail"
    ),
    path("members", people.MemberListView.as_view(), name="member-list"),
    path("members/<int:member_id>", people.MemberDetailView.as_view(), name="member-detail"),
    path("invitations/accept", people.AcceptInvitationView.as_view(), name="invitation-accept"),
]
