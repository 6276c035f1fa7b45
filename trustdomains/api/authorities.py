"""Forced journal operations on the REST API, as SPIRE's localauthority (thin views)."""

from __future__ import annotations

import uuid
from typing import ClassVar

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from trustdomains import localauthority
from trustdomains.api.serializers import JwtAuthoritySerializer, X509AuthoritySerializer
from trustdomains.authorities import KINDS, Authority

SERIALIZERS: dict[str, type[serializers.ModelSerializer]] = {
    "x509": X509AuthoritySerializer,
    "jwt": JwtAuthoritySerializer,
}
OPERATIONS = {
    "activate": localauthority.activate,
    "taint": localauthority.taint,
    "revoke": localauthority.revoke,
}


def _actor(request: Request) -> str:
    return str(getattr(request, "actor", "unknown"))


def _source(request: Request) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))


def _answer(kind: str, authority: Authority, code: int = status.HTTP_200_OK) -> Response:
    return Response(SERIALIZERS[kind](authority).data, status=code)


class AuthoritySchema(AutoSchema):
    """No request body; the answer is the authority of the view's kind (x509 or jwt)."""

    def get_request_serializer(self) -> None:
        return None

    def get_response_serializers(self) -> dict[int, type[serializers.ModelSerializer]]:
        created = isinstance(self.view, PrepareAuthorityView)
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return {code: SERIALIZERS[self.view.kind]}


class PrepareAuthorityView(APIView):
    """POST …/{x509,jwt}-authorities/prepare: a new authority, published, not signing yet."""

    permission_resource = "trust_domain"

    kind: ClassVar[str] = "x509"
    schema = AuthoritySchema()

    def post(self, request: Request) -> Response:
        try:
            authority = localauthority.prepare(
                KINDS[self.kind], actor=_actor(request), source=_source(request)
            )
        except localauthority.AuthorityRateLimited as exc:
            return Response(
                {"code": exc.code, "detail": exc.detail},
                status=status.HTTP_429_TOO_MANY_REQUESTS,
                headers={"Retry-After": str(exc.retry_after)},
            )
        return _answer(self.kind, authority, status.HTTP_201_CREATED)


class AuthorityOperationView(APIView):
    """POST …/{x509,jwt}-authorities/{id}/{activate,taint,revoke}."""

    permission_resource = "trust_domain"

    kind: ClassVar[str] = "x509"
    operation: ClassVar[str] = "activate"
    schema = AuthoritySchema()

    def post(self, request: Request, authority_id: uuid.UUID) -> Response:
        authority = OPERATIONS[self.operation](
            KINDS[self.kind], authority_id, actor=_actor(request), source=_source(request)
        )
        return _answer(self.kind, authority)
