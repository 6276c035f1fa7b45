"""The agent API edge's bookkeeping stays bounded and forgets by age (a fake clock, no sleeps)."""

from __future__ import annotations

import uuid

from issuance.agentapi.limits import AttestationFailures, Backoff, ExpiringSet, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_unknown_name_cache_evicts_the_oldest_and_never_wipes_itself():
    clock = Clock()
    names = ExpiringSet(max_size=100, ttl=30, clock=clock)

    # when a flood adds 10,000 names
    for i in range(10_000):
        names.add(f"n{i}.example")

    # then it holds the 100 newest, never more, and the flood did not wipe them
    assert len(names) == 100
    assert "n9999.example" in names and "n9900.example" in names
    assert "n9899.example" not in names and "n0.example" not in names
    # and each is forgotten once its time is up
    clock.now += 30
    assert "n9999.example" not in names


def test_the_lookup_budget_allows_a_burst_then_its_rate():
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    # a burst of three, then nothing until time passes
    assert [bucket.take() for _ in range(5)] == [True, True, True, False, False]
    # two a second after that, never more than the burst saved up
    clock.now += 1
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now += 3600
    assert sum(bucket.take() for _ in range(10)) == 3


class CountingShared:
    """A shared count that says every source is over the limit, and counts being asked."""

    window = 60

    def __init__(self) -> None:
        self.asked = 0

    def count(self, source: str) -> int:
        self.asked += 1
        return 1_000

    def count_and_left(self, source: str) -> tuple[int, float]:
        self.asked += 1
        return 1_000, 30.0

    def add(self, source: str) -> int:
        return 1_000


def test_a_source_over_the_limit_here_is_known_without_asking_the_shared_count():
    clock, shared = Clock(), CountingShared()
    failures = AttestationFailures(limit=3, window=60, shared=shared, clock=clock)  # type: ignore[arg-type]
    tenant = uuid.uuid4()
    # under the limit here: only the shared count can tell (and it says blocked)
    assert not failures.blocked_here("192.0.2.1")
    assert failures.blocked("192.0.2.1") and shared.asked == 1
    # over the limit here: this process knows on its own, without a round trip
    for _ in range(3):
        failures.failed(tenant, "192.0.2.1", "join_token_invalid", refused=True)
    assert failures.blocked_here("192.0.2.1") and shared.asked == 1
    assert not failures.blocked_here("192.0.2.2")
    # until the window ends
    clock.now += 60
    assert not failures.blocked_here("192.0.2.1")


def test_backoff_doubles_to_its_cap_and_ends_on_success():
    clock = Clock()
    backoff = Backoff(base=1, cap=8, clock=clock)
    assert not backoff.waiting("t")
    waits = []
    for _ in range(6):
        assert backoff.failed("t") >= 1
        start = clock.now
        while backoff.waiting("t"):
            clock.now += 0.5
        waits.append(clock.now - start)
    assert waits == [1, 2, 4, 8, 8, 8]
    backoff.failed("t")
    backoff.succeeded("t")
    assert not backoff.waiting("t")


def test_failed_attestations_block_a_source_and_aggregate_per_tenant_and_window():
    clock, wall = Clock(), Clock()
    failures = AttestationFailures(limit=3, window=60, clock=clock, wall_clock=wall)
    tenant_a, tenant_b = uuid.uuid4(), uuid.uuid4()

    # the first failure of a source at a tenant gets its own row, the rest are counted
    own_rows = [failures.failed(tenant_a, "198.51.100.7", "invalid_join_token") for _ in range(3)]
    assert own_rows == [True, False, False]
    # the source is blocked for every tenant; another source is not
    assert failures.blocked("198.51.100.7") and not failures.blocked("203.0.113.9")
    assert failures.failed(tenant_b, "198.51.100.7", "rate_limited") is True

    # nothing is due before the window ends; then one aggregate per tenant and source
    assert failures.due() == []
    wall.now += 60
    clock.now += 60
    [window] = failures.due()
    assert (window.tenant_id, window.count, window.logged) == (tenant_a, 3, 1)
    assert window.codes == {"invalid_join_token": 3}
    # B's single refusal already has its own row: nothing more to write for it
    assert failures.due(everything=True) == []
    # and a new window starts unblocked
    assert not failures.blocked("198.51.100.7")


def test_a_source_over_the_limit_has_its_connections_refused_until_its_window_ends():
    clock, wall = Clock(), Clock()
    failures = AttestationFailures(limit=3, window=60, clock=clock, wall_clock=wall)
    tenant = uuid.uuid4()
    # under the limit, its connections are let in
    for _ in range(2):
        failures.failed(tenant, "198.51.100.7", "join_token_invalid")
    assert not failures.refuses_connection("198.51.100.7")
    # at the limit, they are refused (and counted for the tenant it failed at); others are not
    failures.failed(tenant, "198.51.100.7", "join_token_invalid")
    assert failures.refuses_connection("198.51.100.7")
    assert failures.refuses_connection("198.51.100.7")
    assert not failures.refuses_connection("203.0.113.9")
    # until its window ends
    clock.now += 60
    assert failures.refuses_connection("198.51.100.7") is False
    [window] = failures.due(everything=True)
    assert (window.tenant_id, window.count, window.connections_refused) == (tenant, 3, 2)


def test_a_source_the_shared_count_blocks_is_refused_at_accept_for_its_time_left():
    clock = Clock()
    failures = AttestationFailures(limit=3, window=60, shared=CountingShared(), clock=clock)  # type: ignore[arg-type]
    # not known here until the shared count is asked (off the event loop)
    assert not failures.refuses_connection("192.0.2.1")
    assert failures.blocked("192.0.2.1")
    # then known here for the 30 s the shared window has left
    assert failures.refuses_connection("192.0.2.1")
    clock.now += 30
    assert not failures.refuses_connection("192.0.2.1")


class FixedShared:
    """A shared count that says `count` failures with `left` seconds of window left."""

    def __init__(self, count: int, left: float) -> None:
        self.answer = (count, left)

    def count_and_left(self, source: str) -> tuple[int, float]:
        return self.answer

    def add(self, source: str) -> int:
        return self.answer[0]


def test_the_shared_count_blocks_from_exactly_the_limit_on():
    # the window's seconds left (60) exceed the limit (3): only the count may be compared
    below = AttestationFailures(limit=3, window=60, shared=FixedShared(2, 60.0))  # type: ignore[arg-type]
    at = AttestationFailures(limit=3, window=60, shared=FixedShared(3, 60.0))  # type: ignore[arg-type]

    # (`is False`: a bool, not merely something falsy)
    assert below.blocked("192.0.2.1") is False
    assert below.refuses_connection("192.0.2.1") is False
    assert at.blocked("192.0.2.1") is True
    assert at.refuses_connection("192.0.2.1") is True
    assert at.refuses_connection("192.0.2.9") is False


def test_refusals_stay_counted_for_the_tenant_after_the_shared_count_confirms_the_source():
    clock, wall = Clock(), Clock()
    failures = AttestationFailures(
        limit=1, window=60, shared=FixedShared(5, 60.0), clock=clock, wall_clock=wall
    )  # type: ignore[arg-type]
    tenant = uuid.uuid4()
    failures.failed(tenant, "198.51.100.7", "join_token_invalid")  # over the limit at tenant
    # when another call asks the shared count (which knows no tenant) about the same source
    assert failures.blocked("198.51.100.7")
    # then its refused connections still count in that tenant's aggregate row
    assert failures.refuses_connection("198.51.100.7")
    [window] = failures.due(everything=True)
    assert (window.tenant_id, window.connections_refused) == (tenant, 1)


def test_only_connection_refusals_still_make_an_aggregate_row():
    clock, wall = Clock(), Clock()
    failures = AttestationFailures(limit=1, window=60, clock=clock, wall_clock=wall)
    tenant = uuid.uuid4()
    assert failures.failed(tenant, "198.51.100.7", "join_token_invalid") is True  # own row
    assert failures.refuses_connection("198.51.100.7")
    [window] = failures.due(everything=True)
    assert (window.count, window.logged, window.connections_refused) == (1, 1, 1)


def test_the_source_table_is_bounded():
    failures = AttestationFailures(limit=3, window=60, max_sources=50, clock=Clock())
    tenant = uuid.uuid4()
    for i in range(1_000):
        failures.failed(tenant, f"10.0.{i // 256}.{i % 256}", "invalid_join_token")
    assert len(failures._sources) == 50
    assert len(failures._windows) <= 50


def test_the_table_of_sources_over_the_limit_is_bounded_oldest_out():
    failures = AttestationFailures(limit=1, window=60, max_sources=2, clock=Clock())
    tenant = uuid.uuid4()
    for source in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        failures.failed(tenant, source, "invalid_join_token")  # each over the limit at once
    # the oldest was forgotten here (the shared count still knows it); the newest two are kept
    assert failures.refuses_connection("192.0.2.1") is False
    assert failures.refuses_connection("192.0.2.2") is True
    assert failures.refuses_connection("192.0.2.3") is True


def test_a_failure_exactly_a_window_later_starts_a_new_count():
    clock = Clock()
    failures = AttestationFailures(limit=2, window=60, clock=clock)
    tenant = uuid.uuid4()
    failures.failed(tenant, "198.51.100.7", "invalid_join_token")
    clock.now += 60
    failures.failed(tenant, "198.51.100.7", "invalid_join_token")
    # one failure in this window: under the limit of two
    assert failures.blocked_here("198.51.100.7") is False
    assert failures.refuses_connection("198.51.100.7") is False
    failures.failed(tenant, "198.51.100.7", "invalid_join_token")
    assert failures.blocked_here("198.51.100.7") is True
    assert failures.blocked_here("203.0.113.9") is False  # a source never seen


def test_the_table_of_counts_is_bounded_oldest_out():
    failures = AttestationFailures(limit=2, window=60, max_sources=2, clock=Clock())
    tenant = uuid.uuid4()
    failures.failed(tenant, "192.0.2.1", "invalid_join_token")
    failures.failed(tenant, "192.0.2.2", "invalid_join_token")
    failures.failed(tenant, "192.0.2.3", "invalid_join_token")  # .1's count goes
    failures.failed(tenant, "192.0.2.1", "invalid_join_token")  # so this is its first again
    assert failures.blocked_here("192.0.2.1") is False
    assert failures.blocked_here("192.0.2.3") is False


def test_a_failure_of_a_source_the_shared_count_blocked_names_its_tenant_for_refusals():
    clock, wall = Clock(), Clock()
    failures = AttestationFailures(
        limit=3, window=60, shared=FixedShared(5, 60.0), clock=clock, wall_clock=wall
    )  # type: ignore[arg-type]
    tenant = uuid.uuid4()
    assert failures.blocked("198.51.100.7")  # over the limit elsewhere; no tenant known here
    # a refused attempt at a tenant (one failure here: under the local limit)
    failures.failed(tenant, "198.51.100.7", "rate_limited", refused=True)
    # and the shared count is asked again (it knows no tenant): the tenant is kept
    assert failures.blocked("198.51.100.7")
    # then the refusals at accept count in that tenant's aggregate row
    assert failures.refuses_connection("198.51.100.7") is True
    [window] = failures.due(everything=True)
    assert (window.tenant_id, window.connections_refused) == (tenant, 1)


def test_a_failure_past_the_room_for_audit_rows_is_counted_but_gets_no_row():
    failures = AttestationFailures(limit=100, window=60, max_sources=1, clock=Clock())
    tenant = uuid.uuid4()
    assert failures.failed(tenant, "192.0.2.1", "invalid_join_token") is True  # its own row
    assert failures.failed(tenant, "192.0.2.2", "invalid_join_token") is False  # no room


def test_a_server_svid_capped_by_its_ca_is_served_until_it_expires():
    # given a tenant whose server SVID ends with its CA in 20 s (past half-life: renewal could
    # not move it further out until the next CA is active)
    import datetime as dt

    from hallmark.x509svid import utcnow
    from issuance.agentapi.tls import TenantCredentials
    from issuance.agentapi.tlsbuild import Credentials

    credentials = TenantCredentials(workers=1)
    try:
        now = utcnow()
        served = object()
        tenant_id = uuid.uuid4()
        credentials._directory["capped.example"] = tenant_id
        credentials._cache["capped.example"] = Credentials(
            tenant_id=tenant_id,
            trust_domain="capped.example",
            certificate_pem=b"",
            key_pem=b"",
            roots_pem=b"",
            issuer_der=b"",
            renew_at=now + dt.timedelta(hours=1),  # no renewal queued by this handshake
            not_after=now + dt.timedelta(seconds=20),
            context=served,  # type: ignore[arg-type]
            roots_checked=float("inf"),
        )

        # when an agent's handshake names it, then its context is served, not an alert
        assert credentials.context_for("capped.example") is served
    finally:
        credentials.close()
