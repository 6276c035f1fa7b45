"""The public index of due refreshes: in step with every relationship, read alone by the sweep."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from federation.models import FederationRelationship
from federation.schedule.models import ScheduledRefresh
from federation.tasks import refresh_due
from tests.conftest import TenantHandle, make_tenant
from tests.federation.web_peer import bundle_document, running_web_peer

PEER = "indexed-peer.test"
pytestmark = pytest.mark.django_db


@pytest.fixture
def peer(settings):
    with running_web_peer() as running:
        settings.FEDERATION_CA_BUNDLE = running.ca_file
        running.answer_json("/bundle", bundle_document(PEER, 1))
        yield running


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """The sweep's refresh tasks run at once, in this process, as a worker would run them."""
    from config.celery import app

    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False


def _relate(handle: TenantHandle, url: str, td: str = PEER) -> None:
    answer = handle.client.post(
        "/api/v1/federation-relationships",
        {"trust_domain": td, "bundle_endpoint_url": url},
        format="json",
    )
    assert answer.status_code == 201, answer.content


def _relationship(handle: TenantHandle, td: str = PEER) -> FederationRelationship:
    with handle.schema():
        return FederationRelationship.objects.get(trust_domain=td)


def _indexed(handle: TenantHandle) -> list[tuple[str, object]]:
    rows = ScheduledRefresh.objects.filter(tenant=handle.tenant).order_by("trust_domain")
    return list(rows.values_list("trust_domain", "next_refresh_at"))


def test_only_the_due_relationship_is_refreshed_by_the_sweep(
    peer, eager_celery, tenant_a, tenant_b
) -> None:
    # given A and B relating to the same peer, B refreshed a moment ago (not due), A never
    _relate(tenant_a, peer.url + "/bundle")
    _relate(tenant_b, peer.url + "/bundle")
    assert (
        tenant_b.client.post(f"/api/v1/federation-relationships/{PEER}/refresh").status_code == 200
    )
    b_before = _relationship(tenant_b)

    # when the sweep runs
    queued = refresh_due()

    # then only A's relationship was fetched, and the index holds its new next_refresh_at
    assert queued == 1
    a_after, b_after = _relationship(tenant_a), _relationship(tenant_b)
    assert a_after.last_refresh_at is not None and a_after.bundle_sequence == 1
    assert b_after.last_refresh_at == b_before.last_refresh_at
    assert _indexed(tenant_a) == [(PEER, a_after.next_refresh_at)]
    assert _indexed(tenant_b) == [(PEER, b_before.next_refresh_at)]
    # and a second sweep finds nothing due
    assert refresh_due() == 0


def test_a_queued_refresh_is_not_queued_again_until_its_lease_ends(peer, tenant_a) -> None:
    import datetime as dt

    from django.utils import timezone

    from federation.schedule.index import claim_due

    _relate(tenant_a, peer.url + "/bundle")
    now, lease = timezone.now(), dt.timedelta(seconds=60)

    first = [due.trust_domain for batch in claim_due(lease=lease, now=now) for due in batch]
    again = [due for batch in claim_due(lease=lease, now=now) for due in batch]
    after_lease = list(claim_due(lease=lease, now=now + lease))

    assert first == [PEER] and again == []
    assert [due.tenant_id for batch in after_lease for due in batch] == [tenant_a.tenant.id]


def test_the_index_follows_create_update_and_delete(peer, tenant_a, tenant_b) -> None:
    # given a relationship with an endpoint: indexed, due at once (next_refresh_at empty)
    _relate(tenant_a, peer.url + "/bundle")
    assert _indexed(tenant_a) == [(PEER, None)]
    assert (
        tenant_a.client.post(f"/api/v1/federation-relationships/{PEER}/refresh").status_code == 200
    )
    assert _indexed(tenant_a) == [(PEER, _relationship(tenant_a).next_refresh_at)]

    # when its endpoint changes, it is due again in both places
    moved = tenant_a.client.patch(
        f"/api/v1/federation-relationships/{PEER}",
        {"bundle_endpoint_url": peer.url + "/moved"},
        format="json",
    )
    assert moved.status_code == 200, moved.content
    assert _indexed(tenant_a) == [(PEER, None)]

    # when it loses its URL there is nothing to fetch: no row
    cleared = tenant_a.client.patch(
        f"/api/v1/federation-relationships/{PEER}", {"bundle_endpoint_url": ""}, format="json"
    )
    assert cleared.status_code == 200, cleared.content
    assert _indexed(tenant_a) == []

    # and a deleted relationship leaves no row, while B's own stays
    _relate(tenant_b, peer.url + "/bundle")
    assert (
        tenant_a.client.patch(
            f"/api/v1/federation-relationships/{PEER}",
            {"bundle_endpoint_url": peer.url + "/bundle"},
            format="json",
        ).status_code
        == 200
    )
    assert tenant_a.client.delete(f"/api/v1/federation-relationships/{PEER}").status_code == 204
    assert _indexed(tenant_a) == []
    assert _indexed(tenant_b) == [(PEER, None)]


def test_a_pasted_bundle_without_endpoint_is_not_indexed(tenant_a) -> None:
    answer = tenant_a.client.post(
        "/api/v1/federation-relationships",
        {"trust_domain": "pasted.test", "trust_domain_bundle": bundle_document("pasted.test")},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    assert _indexed(tenant_a) == []


def test_a_failed_fetch_moves_next_refresh_at_in_both(peer, tenant_a) -> None:
    # given a relationship whose endpoint fails
    _relate(tenant_a, peer.url + "/bundle")
    peer.answers["/bundle"] = (500, {}, b"down")

    # when it is refreshed (and fails: the back-off schedules the next try)
    answer = tenant_a.client.post(f"/api/v1/federation-relationships/{PEER}/refresh")

    # then the relationship and the index name the same next try
    assert answer.status_code == 502
    relationship = _relationship(tenant_a)
    assert relationship.refresh_failures == 1 and relationship.next_refresh_at is not None
    assert _indexed(tenant_a) == [(PEER, relationship.next_refresh_at)]


def test_a_failure_writing_the_index_keeps_the_relationship_as_it_was(peer, tenant_a) -> None:
    from federation.refresh import refresh_relationship

    # given a relationship, and a database that refuses any write of the index from now on
    _relate(tenant_a, peer.url + "/bundle")
    table = ScheduledRefresh._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION public.refuse_index_write() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'index write refused'; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON public.{table} "
            "FOR EACH ROW EXECUTE FUNCTION public.refuse_index_write()"
        )

    # when a refresh fetches a bundle and stores it
    with tenant_a.schema(), pytest.raises(DatabaseError):
        refresh_relationship(trust_domain=PEER)

    # then nothing of it was stored: the relationship and the index still agree
    relationship = _relationship(tenant_a)
    assert relationship.last_refresh_at is None and relationship.bundle_json is None
    assert relationship.next_refresh_at is None
    assert _indexed(tenant_a) == [(PEER, None)]


def test_a_sweep_with_nothing_due_reads_no_tenant_schema(peer, tenant_a, tenant_b) -> None:
    # given three tenants, each with a relationship refreshed a moment ago (none due)
    tenants = [tenant_a, tenant_b, make_tenant("c")]
    for handle in tenants:
        _relate(handle, peer.url + "/bundle")
        assert (
            handle.client.post(f"/api/v1/federation-relationships/{PEER}/refresh").status_code
            == 200
        )
    connection.set_schema_to_public()

    # when the sweep runs
    with CaptureQueriesContext(connection) as captured:
        assert refresh_due() == 0

    # then it asked the index once and never moved into (or named) a tenant's schema
    statements = [q["sql"] for q in captured.captured_queries]
    work = [sql for sql in statements if "search_path" not in sql]
    assert len(work) == 1 and ScheduledRefresh._meta.db_table in work[0]
    for handle in tenants:
        assert not any(handle.tenant.schema_name in sql for sql in statements)


def test_the_migration_backfills_relationships_made_before_the_index(peer, tenant_a, tenant_b):
    import importlib

    from django.apps import apps

    backfill = importlib.import_module("federation.migrations.0003_backfill_refresh_index")

    # given relationships of A and B from before the index existed (their rows are missing)
    _relate(tenant_a, peer.url + "/bundle")
    assert (
        tenant_a.client.post(f"/api/v1/federation-relationships/{PEER}/refresh").status_code == 200
    )
    _relate(tenant_b, peer.url + "/bundle")
    ScheduledRefresh.objects.all().delete()

    # when the data migration runs in A's schema (as migrate_schemas runs it in each)
    with tenant_a.schema():

        class SchemaEditor:
            connection = connection

        backfill.backfill(apps, SchemaEditor())

    # then A's relationship is indexed as it stands, and nothing of B's was read or written
    assert _indexed(tenant_a) == [(PEER, _relationship(tenant_a).next_refresh_at)]
    assert _indexed(tenant_b) == []
