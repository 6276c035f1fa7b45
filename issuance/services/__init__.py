"""Issuance services: every write of the app goes through these functions."""

from issuance.services.agents import (
    Attestation,
    attest_agent,
    attestation_challenge,
    authenticate_agent,
    authenticate_agents,
    ban_agent,
    evict_agent,
    record_failed_attestation,
    record_failed_attestations,
    renew_agent,
)
from issuance.services.batch import (
    BatchPolicy,
    EntryChange,
    ItemResult,
    batch_create_entries,
    batch_delete_entries,
    batch_update_entries,
)
from issuance.services.entries import (
    authorized_entries_by_id,
    create_entry,
    delete_entry,
    expire_entries,
    federated_trust_domains,
    principal_ids,
    tenant_trust_domain,
    update_entry,
)
from issuance.services.join_tokens import NewJoinToken, create_join_token, delete_join_token
from issuance.services.jwt_svids import MintedJwtSvid, new_jwt_svid
from issuance.services.node_attestors import (
    create_node_attestor,
    delete_node_attestor,
    get_node_attestor,
    list_node_attestors,
    update_node_attestor,
)
from issuance.services.revisions import current_revisions, locked_revisions
from issuance.services.svids import SvidRequest, SvidResult, new_x509_svids
from issuance.services.sync import SyncPage, prune_tombstones, sync_page

__all__ = [
    "BatchPolicy",
    "EntryChange",
    "ItemResult",
    "batch_create_entries",
    "batch_delete_entries",
    "batch_update_entries",
    "Attestation",
    "MintedJwtSvid",
    "NewJoinToken",
    "SvidRequest",
    "SvidResult",
    "SyncPage",
    "attest_agent",
    "attestation_challenge",
    "record_failed_attestation",
    "record_failed_attestations",
    "authenticate_agent",
    "authenticate_agents",
    "authorized_entries_by_id",
    "ban_agent",
    "create_entry",
    "create_join_token",
    "create_node_attestor",
    "delete_node_attestor",
    "get_node_attestor",
    "list_node_attestors",
    "update_node_attestor",
    "current_revisions",
    "delete_entry",
    "delete_join_token",
    "evict_agent",
    "expire_entries",
    "federated_trust_domains",
    "locked_revisions",
    "new_jwt_svid",
    "new_x509_svids",
    "principal_ids",
    "prune_tombstones",
    "renew_agent",
    "sync_page",
    "tenant_trust_domain",
    "update_entry",
]
