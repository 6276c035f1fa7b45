"""Viewsets for entries, join tokens and agents: validate the shape, then call a service."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db import models
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from issuance import services
from issuance.api.batch import batch_answer, batch_items, entry_changes, entry_creates, entry_ids
from issuance.api.serializers import (
    AgentSerializer,
    BatchCreateSerializer,
    BatchDeleteSerializer,
    BatchResultsSerializer,
    BatchUpdateSerializer,
    EntryInputSerializer,
    EntrySerializer,
    JoinTokenCreateSerializer,
    JoinTokenSerializer,
    NewJoinTokenSerializer,
)
from issuance.models import Agent, Entry, JoinToken
from tenants.api.base import TenantResourceViewSet
from tenants.roles import check_under_prefix


@contextlib.contextmanager
def _gone_is_404() -> Iterator[None]:
    """A row deleted between the lookup and the service call answers 404 too."""
    try:
        yield
    except ObjectDoesNotExist:
        raise NotFound("not found") from None


class EntryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantResourceViewSet):
    """Registration entries: `?spiffe_id=` and `?parent_id=` filter the list."""

    model = Entry
    serializer_class = EntrySerializer
    permission_resource = "entries"

    def entry_policy(self) -> services.BatchPolicy:
        """Batch items outside the caller's SPIFFE-ID prefix fail alone (`permission_denied`)."""

        prefix = self.spiffe_id_prefix

        def authorize_item(action: str, before: Entry | None, after: Any) -> None:
            check_under_prefix(
                prefix,
                before.spiffe_id if before is not None else None,
                after["spiffe_id"] if after is not None else None,
            )

        return services.BatchPolicy(authorize_item=authorize_item)

    def filter_queryset(self, queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
        for name in ("spiffe_id", "parent_id"):
            value = self.request.query_params.get(name)
            if value:
                queryset = queryset.filter(**{name: value})
        return queryset

    @extend_schema(request=EntryInputSerializer, responses={201: EntrySerializer})
    def create(self, request: Request) -> Response:
        body = EntryInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        self.check_under_prefix(body.validated_data.get("spiffe_id"), action="entry.create")
        entry = services.create_entry(
            tenant=self.tenant, actor=self.actor, fields=body.validated_data, source=self.source()
        )
        return Response(EntrySerializer(entry).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=EntryInputSerializer, responses=EntrySerializer)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        entry = self.get_object()
        body = EntryInputSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        self.check_under_prefix(
            entry.spiffe_id,
            body.validated_data.get("spiffe_id"),
            action="entry.update",
            target=str(entry.pk),
        )
        with _gone_is_404():
            entry = services.update_entry(
                tenant=self.tenant,
                actor=self.actor,
                entry_id=entry.pk,
                changes=body.validated_data,
                source=self.source(),
            )
        return Response(EntrySerializer(entry).data)

    def destroy(self, request: Request, pk: str | None = None) -> Response:
        entry = self.get_object()
        self.check_under_prefix(entry.spiffe_id, action="entry.delete", target=str(entry.pk))
        with _gone_is_404():
            services.delete_entry(
                tenant=self.tenant, actor=self.actor, entry_id=entry.pk, source=self.source()
            )
        return Response(status=status.HTTP_204_NO_CONTENT)

    # SPIRE's BatchCreateEntry/BatchUpdateEntry/BatchDeleteEntry: one result per item, in
    # order; a bad item fails alone (see issuance.services.batch).
    @extend_schema(request=BatchCreateSerializer, responses=BatchResultsSerializer)
    @action(detail=False, methods=["post"], url_path="batch-create", url_name="batch-create")
    def batch_create(self, request: Request) -> Response:
        items = entry_creates(batch_items(request.data, "entries"))
        results = services.batch_create_entries(
            tenant=self.tenant,
            actor=self.actor,
            items=items,
            source=self.source(),
            policy=self.entry_policy(),
        )
        return Response(batch_answer(results))

    @extend_schema(request=BatchUpdateSerializer, responses=BatchResultsSerializer)
    @action(detail=False, methods=["post"], url_path="batch-update", url_name="batch-update")
    def batch_update(self, request: Request) -> Response:
        items = entry_changes(batch_items(request.data, "entries"))
        results = services.batch_update_entries(
            tenant=self.tenant,
            actor=self.actor,
            items=items,
            source=self.source(),
            policy=self.entry_policy(),
        )
        return Response(batch_answer(results))

    @extend_schema(request=BatchDeleteSerializer, responses=BatchResultsSerializer)
    @action(detail=False, methods=["post"], url_path="batch-delete", url_name="batch-delete")
    def batch_delete(self, request: Request) -> Response:
        items = entry_ids(batch_items(request.data, "ids"))
        results = services.batch_delete_entries(
            tenant=self.tenant,
            actor=self.actor,
            items=items,
            source=self.source(),
            policy=self.entry_policy(),
        )
        return Response(batch_answer(results))


class JoinTokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantResourceViewSet):
    """Join tokens: the secret is in the creation answer only."""

    model = JoinToken
    serializer_class = JoinTokenSerializer
    permission_resource = "join_tokens"

    @extend_schema(request=JoinTokenCreateSerializer, responses={201: NewJoinTokenSerializer})
    def create(self, request: Request) -> Response:
        body = JoinTokenCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        # A node alias outside the prefix would let entries hang under someone else's node.
        self.check_under_prefix(body.validated_data.get("spiffe_id"), action="join_token.create")
        created = services.create_join_token(
            tenant=self.tenant,
            actor=self.actor,
            ttl=body.validated_data.get("ttl"),
            spiffe_id=body.validated_data.get("spiffe_id"),
            source=self.source(),
        )
        answer = {
            "id": created.join_token.id,
            "token": created.token,
            "expires_at": created.join_token.expires_at,
            "spiffe_id": created.join_token.spiffe_id,
        }
        return Response(NewJoinTokenSerializer(answer).data, status=status.HTTP_201_CREATED)

    def destroy(self, request: Request, pk: str | None = None) -> Response:
        join_token = self.get_object()
        with _gone_is_404():
            services.delete_join_token(
                tenant=self.tenant,
                actor=self.actor,
                join_token_id=join_token.pk,
                source=self.source(),
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


class AgentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantResourceViewSet):
    """Attested agents: ban (refused from then on) and evict (DELETE; may attest again)."""

    model = Agent
    serializer_class = AgentSerializer
    permission_resource = "agents"

    @extend_schema(request=None, responses=AgentSerializer)
    @action(detail=True, methods=["post"])
    def ban(self, request: Request, pk: str | None = None) -> Response:
        agent = self.get_object()
        with _gone_is_404():
            agent = services.ban_agent(
                tenant=self.tenant, actor=self.actor, agent_id=agent.pk, source=self.source()
            )
        return Response(AgentSerializer(agent).data)

    def destroy(self, request: Request, pk: str | None = None) -> Response:
        agent = self.get_object()
        with _gone_is_404():
            services.evict_agent(
                tenant=self.tenant, actor=self.actor, agent_id=agent.pk, source=self.source()
            )
        return Response(status=status.HTTP_204_NO_CONTENT)
