"""People on the REST API: login and logout, API tokens, members and invitations."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants import accounts, apitokens, members
from tenants.models import ApiToken, Membership
from tenants.services import revoke_api_token


def _source(request: Request) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))


def _actor(request: Request) -> str:
    return str(getattr(request, "actor", "unknown"))


# -- login and logout ------------------------------------------------------------------------
class LoginSerializer(serializers.Serializer):  # type: ignore[type-arg]
    email = serializers.CharField(max_length=254)
    password = serializers.CharField(max_length=200, write_only=True)
    tenant = serializers.CharField(max_length=255, required=False, allow_blank=True)


class TenantRefSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.UUIDField()
    slug = serializers.CharField()
    name = serializers.CharField()
    trust_domain = serializers.CharField()


class SessionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    token = serializers.CharField()
    expires_at = serializers.DateTimeField()
    tenant = TenantRefSerializer()
    role = serializers.CharField()


class LoginView(APIView):
    """`POST /api/v1/auth/login`: a session API token for one of the account's tenants."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(request=LoginSerializer, responses={200: SessionSerializer})
    def post(self, request: Request) -> Response:
        body = LoginSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        session = accounts.login(
            email=body.validated_data["email"],
            password=body.validated_data["password"],
            tenant=body.validated_data.get("tenant") or None,
            request=request._request,
        )
        return Response(SessionSerializer(session).data)


class LogoutView(APIView):
    """`POST /api/v1/auth/logout`: the caller's token is revoked."""

    permission_resource = "session"

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request) -> Response:
        accounts.logout(token=request.auth, actor=_actor(request), source=_source(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- API tokens ------------------------------------------------------------------------------
class ApiTokenInputSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=100)
    role = serializers.CharField(max_length=32)
    spiffe_id_prefix = serializers.CharField(
        max_length=2048, required=False, allow_blank=True, default=""
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class ApiTokenSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A token as lists show it: never the secret, nor its hash."""

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "kind",
            "role",
            "spiffe_id_prefix",
            "prefix",
            "created_at",
            "last_used_at",
            "expires_at",
        ]


class NewApiTokenSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.UUIDField()
    name = serializers.CharField()
    role = serializers.CharField()
    spiffe_id_prefix = serializers.CharField()
    prefix = serializers.CharField()
    token = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)


class ApiTokenListView(APIView):
    """`GET/POST /api/v1/api-tokens`: the tenant's live tokens; a new one (secret shown once)."""

    permission_resource = "api_tokens"

    @extend_schema(responses=ApiTokenSerializer(many=True))
    def get(self, request: Request) -> Response:
        tokens = apitokens.list_api_tokens(tenant=request.tenant)  # type: ignore[attr-defined]
        return Response(ApiTokenSerializer(tokens, many=True).data)

    @extend_schema(request=ApiTokenInputSerializer, responses={201: NewApiTokenSerializer})
    def post(self, request: Request) -> Response:
        body = ApiTokenInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        secret, token = apitokens.create_api_token(
            tenant=request.tenant,  # type: ignore[attr-defined]
            principal=request.user,
            source=_source(request),
            **body.validated_data,
        )
        answer = {
            "id": token.id,
            "name": token.name,
            "role": token.role,
            "spiffe_id_prefix": token.spiffe_id_prefix,
            "prefix": token.prefix,
            "token": secret,
            "expires_at": token.expires_at,
        }
        return Response(NewApiTokenSerializer(answer).data, status=status.HTTP_201_CREATED)


class ApiTokenDetailView(APIView):
    """`DELETE /api/v1/api-tokens/{id}`: revoked at once, on every replica."""

    permission_resource = "api_tokens"
    model = ApiToken

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, token_id: Any) -> Response:
        revoke_api_token(token_id, tenant=request.tenant, actor=_actor(request))  # type: ignore[attr-defined]
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- members and invitations -----------------------------------------------------------------
class MemberSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    email = serializers.CharField(source="user.username")
    role = serializers.CharField()
    status = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_status(self, member: Membership) -> str:
        return "active" if member.active else "invited"


class InviteSerializer(serializers.Serializer):  # type: ignore[type-arg]
    email = serializers.EmailField(max_length=254)
    role = serializers.CharField(max_length=32)


class NewInvitationSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    email = serializers.CharField()
    role = serializers.CharField()
    invitation_token = serializers.CharField()


class RoleChangeSerializer(serializers.Serializer):  # type: ignore[type-arg]
    role = serializers.CharField(max_length=32)


class MemberListView(APIView):
    """`GET/POST /api/v1/members`: members and pending invitations; invite by email and role."""

    permission_resource = "members"

    @extend_schema(responses=MemberSerializer(many=True))
    def get(self, request: Request) -> Response:
        found = members.list_members(tenant=request.tenant)  # type: ignore[attr-defined]
        return Response(MemberSerializer(found, many=True).data)

    @extend_schema(request=InviteSerializer, responses={201: NewInvitationSerializer})
    def post(self, request: Request) -> Response:
        body = InviteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        invited = members.invite(
            tenant=request.tenant,  # type: ignore[attr-defined]
            email=body.validated_data["email"],
            role=body.validated_data["role"],
            actor=_actor(request),
            source=_source(request),
        )
        answer = {
            "id": invited.membership.pk,
            "email": invited.membership.user.username,
            "role": invited.membership.role,
            "invitation_token": invited.token,
        }
        return Response(NewInvitationSerializer(answer).data, status=status.HTTP_201_CREATED)


class MemberDetailView(APIView):
    """`PATCH/DELETE /api/v1/members/{id}`: change a role; remove a member or an invitation."""

    permission_resource = "members"
    model = Membership

    @extend_schema(request=RoleChangeSerializer, responses=MemberSerializer)
    def patch(self, request: Request, member_id: int) -> Response:
        body = RoleChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        member = members.change_role(
            member_id,
            tenant=request.tenant,  # type: ignore[attr-defined]
            role=body.validated_data["role"],
            actor=_actor(request),
            source=_source(request),
        )
        return Response(MemberSerializer(member).data)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, member_id: int) -> Response:
        members.remove_member(
            member_id,
            tenant=request.tenant,  # type: ignore[attr-defined]
            actor=_actor(request),
            source=_source(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class AcceptSerializer(serializers.Serializer):  # type: ignore[type-arg]
    invitation_token = serializers.CharField(max_length=200)
    password = serializers.CharField(max_length=200, write_only=True)


class AcceptedSerializer(serializers.Serializer):  # type: ignore[type-arg]
    tenant = TenantRefSerializer()
    email = serializers.CharField()
    role = serializers.CharField()


class AcceptInvitationView(APIView):
    """`POST /api/v1/invitations/accept` (public): the invitation token and a password."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(request=AcceptSerializer, responses={200: AcceptedSerializer})
    def post(self, request: Request) -> Response:
        from django.conf import settings

        from tenants import ratelimit

        ratelimit.enforce("invitation", request._request, limit=settings.LOGIN_RATE_LIMIT)
        body = AcceptSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        member = members.accept_invitation(
            token=body.validated_data["invitation_token"],
            password=body.validated_data["password"],
            source=_source(request),
        )
        answer = {"tenant": member.tenant, "email": member.user.username, "role": member.role}
        return Response(AcceptedSerializer(answer).data)
