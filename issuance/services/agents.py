"""Agents: node attestation by the tenant's attestors, SVID renewal, authentication, bans."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.postgresql_backend.base import is_valid_schema_name

from attestors.node.base import AttestedNode
from hallmark.bundle import Bundle
from hallmark.errors import HallmarkError, InvalidSvid
from hallmark.x509svid import LeafRequest, public_key_from_csr, verify_x509_svid
from issuance.errors import (
    AgentDenied,
    AgentNotAuthenticated,
    AttestationDenied,
    InvalidAttestationRequest,
)
from issuance.models import Agent, AttestationProof, Entry
from issuance.services import node_attestors
from issuance.services.entries import tenant_trust_domain
from tenants.billing import services as billing
from tenants.events import publish_change
from tenants.metering import services as metering
from tenants.scoping import current_tenant
from tenants.services import record_audit, refuse_if_suspended
from trustdomains import services as trustdomain_services

if TYPE_CHECKING:
    from tenants.models import Tenant

AGENT_PATH_PREFIX = "/spire/agent/"
SERVER_PATH = "/spire/server"
PROOF_SKEW = dt.timedelta(seconds=60)
# Sizes of what an anonymous caller sends, bounded before anything is parsed or stored.
# Join tokens are tiny; 64 KiB leaves room for the certificate chains and signed documents
# of the other node attestors (x509pop, k8s_psat, tpm_devid, ...).
MAX_ATTESTATION_DATA_BYTES = 64 * 1024
MAX_CSR_BYTES = 16 * 1024
# last_seen is a hint for operators; writing it at most this often keeps syncs read-only.
LAST_SEEN_RESOLUTION = dt.timedelta(seconds=30)
UNAUTHENTICATED_ACTOR = "agent:unauthenticated"


@dataclass(frozen=True)
class Attestation:
    """An attested agent, its new SVID chain (leaf first) and the bundle to trust."""

    agent: Agent
    chain: list[x509.Certificate]
    bundle: Bundle


def serial_hex(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "x")


def _agent_svid(spiffe_id: str, csr: bytes) -> list[x509.Certificate]:
    from hallmark.spiffeid import SpiffeId

    request = LeafRequest(
        spiffe_id=SpiffeId.parse(spiffe_id),
        public_key=public_key_from_csr(csr),
        ttl=dt.timedelta(seconds=settings.AGENT_SVID_TTL_SECONDS),
    )
    return trustdomain_services.sign_x509_svids([request])[0]


def attest_agent(  # noqa: PLR0913 - one attestation's parts
    *,
    tenant: Tenant,
    attestation_type: str,
    attestation_data: bytes,
    csr: bytes,
    source: str = "",
    audit_failure: Callable[[HallmarkError], bool] | None = None,
    challenge: bytes | None = None,
    challenge_response: bytes | None = None,
) -> Attestation:
    """Node attestation by the tenant's attestor of `attestation_type`; audited either way.

    `challenge` is what `attestation_challenge` asked and `challenge_response` the agent's
    answer (challenge/response attestors). `audit_failure(error)` says whether a failure gets
    its own audit row now; the agent API counts the others and writes them per source and
    window (`record_failed_attestations`).
    """
    try:
        refuse_if_suspended(tenant.pk, error=AgentDenied)
        return _attest(
            tenant=tenant,
            attestation_type=attestation_type,
            attestation_data=attestation_data,
            csr=csr,
            source=source,
            challenge=challenge,
            challenge_response=challenge_response,
        )
    except HallmarkError as exc:
        if audit_failure is None or audit_failure(exc):
            record_failed_attestation(
                tenant=tenant, source=source, error=exc, attestation_type=attestation_type
            )
        raise


def attestation_challenge(
    *,
    tenant: Tenant,
    attestation_type: str,
    attestation_data: bytes,
    csr: bytes,
    source: str = "",
    audit_failure: Callable[[HallmarkError], bool] | None = None,
) -> bytes | None:
    """The challenge the tenant's attestor asks before it attests, or None (no challenge)."""
    try:
        _check_sizes(attestation_data, csr)
        attestor = node_attestors.server_attestor(
            attestation_type, trust_domain=tenant_trust_domain().name
        )
        public_key_from_csr(csr)
        return attestor.challenge(attestation_data)
    except HallmarkError as exc:
        if audit_failure is None or audit_failure(exc):
            record_failed_attestation(
                tenant=tenant, source=source, error=exc, attestation_type=attestation_type
            )
        raise


def record_failed_attestation(
    *,
    tenant: Tenant,
    source: str,
    error: HallmarkError,
    attestation_type: str = "",
    outcome: str = "failure",
) -> None:
    """The audit row of one failed (or refused) attestation."""
    with transaction.atomic():
        record_audit(
            tenant=tenant,
            actor=UNAUTHENTICATED_ACTOR,
            action="agent.attest",
            outcome=outcome,
            source=source,
            detail={
                "attestation_type": attestation_type[:64],
                "code": error.code,
                "error": error.detail[:500],
            },
        )


def record_failed_attestations(  # noqa: PLR0913 - one aggregated audit row's fields
    *,
    tenant: Tenant,
    source: str,
    count: int,
    codes: dict[str, int],
    window_start: dt.datetime,
    window_seconds: float,
    connections_refused: int = 0,
) -> None:
    """One audit row for `count` failed attestations from `source` in one time window (and
    the `connections_refused` at accept while the source was over its limit)."""
    detail: dict[str, Any] = {}
    if connections_refused:
        detail["connections_refused"] = connections_refused
    with transaction.atomic():
        record_audit(
            tenant=tenant,
            actor=UNAUTHENTICATED_ACTOR,
            action="agent.attest",
            outcome="failure",
            source=source,
            detail={
                "aggregated": True,
                "count": count,
                "codes": dict(sorted(codes.items())[:20]),
                "window_start": window_start.isoformat(),
                "window_seconds": window_seconds,
                **detail,
            },
        )


def _check_sizes(attestation_data: bytes, csr: bytes) -> None:
    if len(attestation_data) > MAX_ATTESTATION_DATA_BYTES:
        raise InvalidAttestationRequest(
            f"attestation_data is {len(attestation_data)} bytes; at most "
            f"{MAX_ATTESTATION_DATA_BYTES} are accepted",
            code="attestation_data_too_large",
        )
    if len(csr) > MAX_CSR_BYTES:
        raise InvalidAttestationRequest(
            f"csr is {len(csr)} bytes; at most {MAX_CSR_BYTES} are accepted", code="csr_too_large"
        )


def node_entry_aliases(selectors: list[str]) -> list[str]:
    """SPIFFE IDs of node entries (parent: the server) whose selectors the node has, as SPIRE."""
    if not selectors:
        return []
    held = set(selectors)
    server_id = str(tenant_trust_domain().spiffe_id(SERVER_PATH))
    now = timezone.now()
    return sorted(
        {
            spiffe_id
            for spiffe_id, wanted, expires_at in Entry.objects.filter(
                parent_id=server_id, expired=False
            ).values_list("spiffe_id", "selectors", "expires_at")
            if wanted and set(wanted) <= held and (expires_at is None or expires_at > now)
        }
    )


def refresh_node_aliases(agent: Agent) -> Agent:
    """Bring an attested node's aliases up to date with the node entries as they are now.

    Node entries can be created, changed or deleted after the agent attested; an agent whose
    aliases changed gets a full sync next (it may have gained or lost whole subtrees).
    """
    if not agent.selectors:
        return agent
    aliases = sorted({*_token_aliases(agent), *node_entry_aliases(list(agent.selectors))})
    if aliases != sorted(agent.node_aliases):
        Agent.objects.filter(pk=agent.pk).update(node_aliases=aliases, full_sync_revision=0)
        agent.node_aliases, agent.full_sync_revision = aliases, 0
    return agent


def _token_aliases(agent: Agent) -> list[str]:
    from issuance.models import JoinToken

    return [
        alias
        for alias in JoinToken.objects.filter(agent=agent).values_list("spiffe_id", flat=True)
        if alias
    ]


def _spend_proof(node: AttestedNode, spiffe_id: str) -> None:
    """Refuse a single-use proof seen before (replay); remember it until it expires."""
    if node.proof_id is None:
        return
    now = timezone.now()
    AttestationProof.objects.filter(expires_at__lt=now - PROOF_SKEW).delete()
    expires_at = (node.proof_expires_at or now) + PROOF_SKEW
    _, created = AttestationProof.objects.get_or_create(
        proof_id=node.proof_id[:128],
        defaults={"agent_spiffe_id": spiffe_id, "expires_at": expires_at},
    )
    if not created:
        raise AttestationDenied(
            "this attestation proof was already used; present a fresh one",
            code="proof_replayed",
        )


def _attest(  # noqa: PLR0913
    *,
    tenant: Tenant,
    attestation_type: str,
    attestation_data: bytes,
    csr: bytes,
    source: str,
    challenge: bytes | None = None,
    challenge_response: bytes | None = None,
) -> Attestation:
    _check_sizes(attestation_data, csr)
    trust_domain = tenant_trust_domain()
    attestor = node_attestors.server_attestor(attestation_type, trust_domain=trust_domain.name)
    public_key_from_csr(csr)  # refuse a bad CSR before a token is spent
    lookup = node_attestors.TenantLookup()
    with transaction.atomic():
        node = attestor.attest(
            attestation_data, challenge=challenge, response=challenge_response, lookup=lookup
        )
        spiffe_id = str(trust_domain.spiffe_id(f"{AGENT_PATH_PREFIX}{node.agent_path}"))
        _spend_proof(node, spiffe_id)
        agent = Agent.objects.select_for_update().filter(spiffe_id=spiffe_id).first()
        if agent is not None and agent.banned:
            raise AttestationDenied(f"agent {spiffe_id} is banned", code="agent_banned")
        if agent is not None and not node.can_reattest:
            # SPIRE's trust on first use (aws_iid, ...): the proof already bound an agent.
            raise AttestationDenied(
                f"agent {spiffe_id} is already attested and its attestor does not allow "
                "re-attestation; evict it first",
                code="agent_already_attested",
            )
        if agent is not None and agent.attestation_type != attestation_type:
            raise AttestationDenied(
                f"agent {spiffe_id} attested with {agent.attestation_type}",
                code="attestation_type_mismatch",
            )
        if agent is None:
            admit_new_agent(tenant)
        chain = _agent_svid(spiffe_id, csr)
        reattested = agent is not None
        agent = agent or Agent(spiffe_id=spiffe_id)
        selectors = sorted(set(node.selectors))
        agent.attestation_type = attestation_type
        agent.serial = serial_hex(chain[0])
        agent.new_serial = ""
        agent.expires_at = chain[0].not_valid_after_utc
        agent.selectors = selectors
        agent.can_reattest = node.can_reattest
        agent.node_aliases = sorted({*node.node_aliases, *node_entry_aliases(selectors)})
        agent.last_seen = timezone.now()
        agent.full_sync_revision = 0  # its first sync replaces whatever set it held
        agent.save()
        if lookup.join_token is not None:
            lookup.join_token.agent = agent
            lookup.join_token.save(update_fields=["used_at", "agent"])
        detail: dict[str, object] = {
            "attestation_type": attestation_type,
            **{k: v for k, v in node.detail.items() if isinstance(v, str)},
            "serial": agent.serial,
            "node_aliases": agent.node_aliases,
        }
        if selectors:
            detail["selectors"] = selectors[:50]
        if reattested:
            detail["reattested"] = True
        record_audit(
            tenant=tenant,
            actor=f"agent:{spiffe_id}",
            action="agent.attest",
            target=spiffe_id,
            source=source,
            detail=detail,
        )
    if reattested:
        publish_change(tenant_id=tenant.id, kind="agents")  # its old SVID's streams end
    metering.count_svids(tenant.pk, x509=1)
    return Attestation(agent=agent, chain=chain, bundle=trustdomain_services.current_bundle())


def admit_new_agent(tenant: Tenant) -> None:
    """Quotas at node attestation: a new agent past `max_agents` (or once the month's SVIDs
    passed `max_svids_per_month`) is refused, `quota_exceeded` → RESOURCE_EXHAUSTED.

    Call inside the attestation's transaction, before the agent row is written; the advisory
    lock makes concurrent attestations of one tenant count one after the other.
    """
    from issuance.services.usage import live_agents

    billing.lock_agent_admission(tenant)
    billing.check_new_agent(tenant, live_agents=live_agents())


def authenticate_agent(
    certificate: x509.Certificate | None, *, tenant_read_now: Tenant | None = None
) -> Agent:
    """The agent behind a TLS client certificate, checked against the tenant's bundle now.

    `tenant_read_now`: the tenant's row as this very call read it from the database (the agent
    API reads it at the start of every call); its status then stands for the suspension
    check instead of a second read of the same row.
    """
    [result] = authenticate_agents([certificate], tenant_read_now=tenant_read_now)
    if isinstance(result, HallmarkError):
        raise result
    return result


def authenticate_agents(
    certificates: list[x509.Certificate | None], *, tenant_read_now: Tenant | None = None
) -> list[Agent | HallmarkError]:
    """`authenticate_agent` for many certificates of one tenant at once, in the same order:
    each one's agent, or the error the single check raises for it.

    The tenant, its bundle and the agents' rows are read once for all of them (one query for
    the agents, one update for the last-seen times due), so re-checking the thousands of
    agents a replica holds streams for costs a few queries a batch, not a few a stream.
    """
    # A suspended tenant's agents get no new SVIDs (and no entries) until it is reactivated.
    # Either way every certificate gets the refusal as its answer (none raises for the batch).
    if tenant_read_now is None:
        try:
            refuse_if_suspended(current_tenant().pk, error=AgentDenied)
        except AgentDenied as refused:
            return [refused for _ in certificates]
    elif tenant_read_now.status == tenant_read_now.Status.SUSPENDED:
        suspended = AgentDenied(
            "this tenant is suspended by the platform operator", code="tenant_suspended"
        )
        return [suspended for _ in certificates]
    bundle = trustdomain_services.current_bundle()
    intermediates: list[x509.Certificate] | None = None
    verified: list[tuple[x509.Certificate, str] | HallmarkError] = []
    for certificate in certificates:
        if certificate is None:
            verified.append(
                AgentNotAuthenticated(
                    "this call needs the agent's X.509-SVID as TLS client certificate; "
                    "attest first",
                    code="no_client_certificate",
                )
            )
            continue
        try:
            chain = [certificate]
            if certificate.issuer not in {root.subject for root in bundle.x509_authorities}:
                # Issued below an upstream root: complete the chain with the published CAs.
                if intermediates is None:
                    intermediates = trustdomain_services.published_intermediates()
                chain += intermediates
            spiffe_id = verify_x509_svid(chain, bundle.x509_authorities)
        except InvalidSvid as exc:
            verified.append(AgentNotAuthenticated(exc.detail, code="invalid_agent_svid"))
            continue
        if spiffe_id.trust_domain != bundle.trust_domain:
            verified.append(
                AgentNotAuthenticated(
                    f"{spiffe_id} is not in trust domain {bundle.trust_domain}",
                    code="invalid_agent_svid",
                )
            )
            continue
        verified.append((certificate, str(spiffe_id)))
    named = {v[1] for v in verified if isinstance(v, tuple)}
    agents = {a.spiffe_id: a for a in Agent.objects.filter(spiffe_id__in=named)} if named else {}
    now = timezone.now()
    seen: set[Any] = set()  # agents whose last_seen is due, written in one update
    results: list[Agent | HallmarkError] = []
    for item in verified:
        if isinstance(item, HallmarkError):
            results.append(item)
            continue
        certificate, name = item
        results.append(_checked_agent(agents.get(name), name, certificate, now, seen))
    if seen:
        Agent.objects.filter(pk__in=seen).update(last_seen=now)
    return results


def _checked_agent(
    agent: Agent | None,
    spiffe_id: str,
    certificate: x509.Certificate,
    now: dt.datetime,
    seen: set[Any],
) -> Agent | HallmarkError:
    """The agent if this certificate is its current SVID; its last_seen due goes in `seen`."""
    if agent is None:
        return AgentDenied(f"{spiffe_id} is not an attested agent", code="agent_not_attested")
    if agent.banned:
        return AgentDenied(f"agent {spiffe_id} is banned", code="agent_banned")
    serial = serial_hex(certificate)
    if serial == agent.new_serial:
        # The first call with a renewed SVID retires the previous one (as SPIRE does).
        Agent.objects.filter(pk=agent.pk, new_serial=serial).update(
            serial=serial, new_serial="", last_seen=now
        )
        agent.serial, agent.new_serial, agent.last_seen = serial, "", now
        seen.discard(agent.pk)
    elif serial != agent.serial:
        return AgentDenied(
            f"this SVID of {spiffe_id} was superseded by a newer one", code="agent_svid_superseded"
        )
    elif agent.last_seen is None or now - agent.last_seen > LAST_SEEN_RESOLUTION:
        seen.add(agent.pk)
        agent.last_seen = now
    return agent


def renew_agent(
    *, tenant: Tenant, agent: Agent, csr: bytes, source: str = ""
) -> list[x509.Certificate]:
    """A new agent SVID for a new key; the old one works until the new one is first used."""
    with transaction.atomic():
        locked = Agent.objects.select_for_update().get(pk=agent.pk)
        if locked.banned:
            raise AgentDenied(f"agent {locked.spiffe_id} is banned", code="agent_banned")
        chain = _agent_svid(locked.spiffe_id, csr)
        locked.new_serial = serial_hex(chain[0])
        locked.expires_at = chain[0].not_valid_after_utc
        locked.save(update_fields=["new_serial", "expires_at"])
        record_audit(
            tenant=tenant,
            actor=f"agent:{locked.spiffe_id}",
            action="agent.renew",
            target=locked.spiffe_id,
            source=source,
            detail={"serial": locked.new_serial},
        )
    metering.count_svids(tenant.pk, x509=1)  # renewals are never refused for a quota
    return chain


def ban_agent(*, tenant: Tenant, actor: str, agent_id: uuid.UUID, source: str = "") -> Agent:
    """Ban the agent: every later call, renewal or re-attestation with its ID is refused."""
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent_id)
        agent.banned = True
        agent.save(update_fields=["banned"])
        record_audit(
            tenant=tenant, actor=actor, action="agent.ban", target=agent.spiffe_id, source=source
        )
        publish_change(tenant_id=tenant.id, kind="agents")  # ends its open watch streams
    return agent


def evict_agent(*, tenant: Tenant, actor: str, agent_id: uuid.UUID, source: str = "") -> None:
    """Forget the agent: its SVID stops working; it may attest again with a new token."""
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent_id)
        spiffe_id = agent.spiffe_id
        agent.delete()
        record_audit(
            tenant=tenant, actor=actor, action="agent.evict", target=spiffe_id, source=source
        )
        publish_change(tenant_id=tenant.id, kind="agents")


def unbanned_agent_counts(tenants: list[Tenant]) -> dict[str, int]:
    """Each tenant's unbanned agents by tenant id, in one query over every schema (the
    operators' tenant list).

    Schema names come from the tenants table and are checked against django-tenants' own
    rule for schema names before they are quoted into the query.
    """
    listed = [t for t in tenants if is_valid_schema_name(t.schema_name)]
    if not listed:
        return {}
    quote = connection.ops.quote_name
    parts = [
        f"SELECT %s, count(*) FROM {quote(t.schema_name)}.issuance_agent WHERE NOT banned"  # noqa: S608 - checked names
        for t in listed
    ]
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), [str(t.pk) for t in listed])
        return {row[0]: int(row[1]) for row in cursor.fetchall()}
