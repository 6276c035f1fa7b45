"""Public signup (the audit trail's views are in tenants.audit.api)."""

from __future__ import annotations

from django.conf import settings
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants import ratelimit, services, signupgate
from tenants.api.serializers import SignupSerializer


class SignupView(APIView):
    """`POST /api/v1/signup`: a new tenant with its trust domain, CA and first API token.

    Rate-limited per client address (429 `rate_limited` with `Retry-After`), and provisioned
    a few at a time across the platform (503 `busy` with `Retry-After`); a reserved trust
    domain is 400 `trust_domain_reserved`; an email that already has an account answers as a
    new one does (see `services.signup`), so signup does not tell who has an account.
    """

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        # Every attempt counts, before the body is even read: a signup makes a schema, keys
        # and a Vault policy, and failed ones probe names. SignupRateLimitMiddleware counts
        # it ahead of DRF; here only when that middleware is not installed.
        if not getattr(request._request, ratelimit.ADMITTED, False):
            ratelimit.enforce("signup", request._request, limit=settings.SIGNUP_RATE_LIMIT)
            with signupgate.signup_slot():  # 503 busy while the platform's slots are taken
                return self._signup(request)
        return self._signup(request)

    def _signup(self, request: Request) -> Response:
        serializer = SignupSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = services.signup(
            **serializer.validated_data, source=request.META.get("REMOTE_ADDR", "")
        )
        tenant = result.tenant
        return Response(
            {
                "tenant": {"id": str(tenant.id), "slug": tenant.slug, "name": tenant.name},
                "trust_domain": tenant.trust_domain,
                "token": result.token,
                "agent_endpoint": settings.AGENT_ENDPOINT,
                "bundle_url": f"{settings.HTTP_PUBLIC_URL.rstrip('/')}"
                f"/bundle/{tenant.trust_domain}",
            },
            status=status.HTTP_201_CREATED,
        )
