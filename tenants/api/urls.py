"""Routes of the tenants app under /api/v1/."""

from django.urls import path

from tenants.api.views import SignupView

urlpatterns = [
    path("signup", SignupView.as_view(), name="signup"),
]
