"""Two workers rotating the same tenant at once: one rotation, no lost or keyless authority."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from tests.conftest import make_tenant
from tests.trustdomains.changes import HOUR, sequence, start_of
from trustdomains import services
from trustdomains.keymanagers import get_key_manager
from trustdomains.models import JwtAuthority, X509Authority
from trustdomains.tasks import rotate_trust_domain

pytestmark = pytest.mark.django_db(transaction=True)
# Every 2 h for 52 h: two CA lifetimes, so prepare, activate and prune all happen, and races
# meet each of them. A short grace makes pruning happen inside the window.
MOMENTS = [h * HOUR for h in range(0, 52, 2)]
WORKERS = 2


def run_workers(tenant_id: str, at: float) -> list[list[str] | BaseException]:
    """WORKERS threads (each with its own DB connection) run the task at the same moment."""
    barrier = threading.Barrier(WORKERS)
    results: list[list[str] | BaseException] = [[] for _ in range(WORKERS)]

    def work(slot: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[slot] = rotate_trust_domain(tenant_id, at=at)
        except BaseException as exc:  # reported by the test, never swallowed
            results[slot] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def assert_journal_invariants(handle, bundles_by_sequence: dict[int, bytes]) -> None:
    with handle.schema():
        for model in (X509Authority, JwtAuthority):
            live = model.objects.filter(revoked=False, pruned_at__isnull=True)
            assert live.filter(status="active").count() == 1, f"{model.__name__}: one active"
            assert live.filter(status="prepared").count() <= 1, f"{model.__name__}: prepared"
        bundle = services.current_bundle()
        # every published authority's key exists in its key manager and matches
        for authority in X509Authority.objects.filter(revoked=False, pruned_at__isnull=True):
            signer = get_key_manager(authority.key_manager).signer(authority.key_ref)
            assert signer.public_key() == authority.certificate.public_key()
            assert authority.certificate in bundle.x509_authorities
        for authority in JwtAuthority.objects.filter(revoked=False, pruned_at__isnull=True):
            signer = get_key_manager(authority.key_manager).signer(authority.key_ref)
            assert signer.public_key() == authority.public_key
    # one sequence, one bundle: the content never changes under the same sequence
    document = bundle.to_json()
    assert bundles_by_sequence.setdefault(bundle.sequence, document) == document


def test_two_workers_rotating_one_tenant_do_it_once_and_keep_the_journal_whole(
    default_key_manager, settings
):
    # given two tenants on the same backend; A is rotated by two racing workers, B by one
    settings.PRUNE_GRACE_SECONDS = 2 * 3600
    racing, reference = make_tenant("race"), make_tenant("ref")
    racing_start, reference_start = start_of(racing), start_of(reference)
    bundles: dict[int, bytes] = {}
    raced_ops: Counter[tuple[int, str, str]] = Counter()
    reference_ops: Counter[tuple[int, str, str]] = Counter()
    last_sequence = sequence(racing)

    for index, offset in enumerate(MOMENTS):
        # when both workers run the task for the same moment
        results = run_workers(str(racing.tenant.id), (racing_start + offset).timestamp())
        expected = rotate_trust_domain(
            str(reference.tenant.id), at=(reference_start + offset).timestamp()
        )

        # then neither failed, and together they did exactly what one worker does
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors
        for result in results:
            raced_ops.update((index, *c.split(":")[:2]) for c in result)  # type: ignore[union-attr]
        reference_ops.update((index, *c.split(":")[:2]) for c in expected)
        assert raced_ops == reference_ops, f"at +{offset}"
        # and the journal holds: one active, at most one prepared, every published key exists
        assert_journal_invariants(racing, bundles)
        assert sequence(racing) >= last_sequence
        last_sequence = sequence(racing)

    # and over two CA lifetimes every kind of step happened
    operations = {(kind, op) for _, kind, op in raced_ops}
    assert {("x509", "prepare"), ("x509", "activate"), ("x509", "prune")} <= operations
    assert {("jwt", "prepare"), ("jwt", "activate"), ("jwt", "prune")} <= operations
