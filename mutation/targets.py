"""The security-critical modules `make mutation` mutates, each with the tests that guard it.

Keep each test list tight and fastest-first: every mutant runs it with `-x`, so the first
failing test ends the run. `functions` narrows a big module to its security checks
(qualified names; a class name takes its methods); `strings` also drops each `{value}` of
f-strings (key-manager policies are f-strings: dropping the tenant prefix is the hole).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """One module to mutate and the tests that must kill its mutants."""

    name: str
    path: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] | None = None
    strings: bool = False
    timeout: float = 240.0  # seconds per mutant; a hung run counts as killed ("timeout")
    notes: str = field(default="")


TARGETS: tuple[Target, ...] = (
    Target(
        name="selectors",
        path="hallmark/selectors.py",
        tests=("tests/hallmark/test_selectors.py", "tests/hallmark/test_selectors_edges.py"),
        timeout=60,
    ),
    Target(
        name="jwtsvid",
        path="hallmark/jwtsvid.py",
        tests=("tests/hallmark/test_jwtsvid.py", "tests/hallmark/test_jwtsvid_edges.py"),
        timeout=60,
    ),
    Target(
        name="token-authentication",
        path="tenants/api/authentication.py",
        tests=(
            "tests/tenants/test_authentication.py",
            "tests/tenants/test_token_revocation.py",
            "tests/tenants/test_token_use.py",
        ),
        timeout=120,
    ),
    Target(
        name="token-revocation",
        path="tenants/services.py",
        tests=("tests/tenants/test_token_revocation.py",),
        functions=("revoke_api_token",),
        timeout=120,
    ),
    Target(
        name="api-error-answers",
        path="tenants/api/errors.py",
        tests=(
            "tests/tenants/test_error_answers.py",
            "tests/tenants/test_request_bounds.py",
            "tests/tenants/test_authentication.py",
            "tests/tenants/test_edge_refusals.py",
        ),
        # every REST error answers {code, detail} with its stable code and status, and no
        # exception text beyond the message
        functions=("exception_handler", "flatten_detail"),
        timeout=180,
    ),
    Target(
        name="tenant-scoping",
        path="tenants/scoping.py",
        tests=(
            "tests/tenants/test_scoping.py",
            "tests/tenants/test_authentication.py",
        ),
        timeout=240,
    ),
    Target(
        name="tenant-resource-viewset",
        path="tenants/api/base.py",
        tests=("tests/tenants/test_scoping.py",),  # its last test drives the entries API
        timeout=240,
    ),
    Target(
        name="unix-attestor",
        path="attestors/workload/unix.py",
        tests=(
            "tests/attestors/test_unix_edges.py",
            "tests/attestors/test_exe_hash_cache.py",
            "tests/attestors/test_unix.py",
            "tests/agent/test_workload_api.py",
        ),
        timeout=120,
    ),
    Target(
        name="workload-api-server",
        path="agent/workload/server.py",
        tests=(
            "tests/agent/test_workload_security_header.py",
            "tests/agent/test_workload_attestation_failures.py",
            "tests/agent/test_workload_in_process.py",
            "tests/agent/test_workload_jwt_edges.py",
            "tests/agent/test_workload_api.py",
            "tests/agent/test_workload_jwt.py",
        ),
        # the security header, caller attestation, and the JWT and bundle calls; the X.509
        # stream's waiting logic and the server's start/stop plumbing are left out for time
        functions=(
            "WorkloadApiServicer._check_header",
            "WorkloadApiServicer._attest",
            "WorkloadApiServer._attest",
            "WorkloadApiServicer.FetchX509Bundles",
            "WorkloadApiServicer.FetchJWTBundles",
            "WorkloadApiServicer.FetchJWTSVID",
            "WorkloadApiServicer.ValidateJWTSVID",
        ),
        timeout=180,
    ),
    Target(
        name="workload-api-responses",
        path="agent/workload/responses.py",
        tests=(
            "tests/agent/test_workload_in_process.py",
            "tests/agent/test_workload_api.py",
            "tests/agent/test_workload_jwt.py",
        ),
        functions=("matching_entries", "federated_for", "caller_bundles"),
        timeout=180,
    ),
    Target(
        name="vault-policies",
        path="trustdomains/keymanagers/vault.py",
        tests=(
            "tests/trustdomains/test_vault_policy_recovery.py",
            "tests/trustdomains/test_vault_key_manager.py",
        ),
        functions=(
            "tenant_policy_name",
            "tenant_policy",
            "VaultTransitKeyManager._create_tenant_token",
        ),
        strings=True,
        timeout=240,
    ),
    Target(
        name="join-tokens",
        path="issuance/services/join_tokens.py",
        tests=(
            "tests/issuance/test_join_token_limits.py",
            "tests/issuance/test_join_token_secrets.py",
            "tests/issuance/test_join_tokens_api.py",
            "tests/issuance/test_agent_api_attestation.py",
        ),
        functions=("_ttl", "redeem", "create_join_token"),
        timeout=300,
    ),
    Target(
        name="agent-authentication",
        path="issuance/services/agents.py",
        tests=(
            "tests/issuance/test_agent_attestation_records.py",
            "tests/issuance/test_agent_api_attestation.py",
            "tests/issuance/test_agent_api_taint.py",
        ),
        functions=("_attest",),
        timeout=300,
    ),
    Target(
        name="agent-authentication-per-call",
        path="issuance/services/agents.py",
        tests=(
            "tests/issuance/test_agent_api_entries.py::test_renewed_svid_replaces_the_old_one_once_used",
            "tests/issuance/test_agent_authentication.py",
            "tests/issuance/test_suspended_tenant_agents.py",
            "tests/security/test_agent_api_matrix.py",
        ),
        functions=("authenticate_agent", "authenticate_agents", "_checked_agent"),
        timeout=300,
    ),
    Target(
        name="agent-watch-rechecks",
        path="issuance/agentapi/recheck.py",
        tests=(
            "tests/issuance/test_agent_api_watch.py",
            "tests/issuance/test_agent_authentication.py",
        ),
        # a watching agent's re-check, batched with its tenant's others: each stream must get
        # its own answer (a banned agent's stream ends, its neighbours' go on)
        timeout=180,
    ),
    Target(
        name="agent-watch-stream",
        path="issuance/agentapi/servicer.py",
        tests=("tests/issuance/test_agent_api_watch.py",),
        functions=(
            "AgentApiServicer.WatchUpdates",
            "AgentApiServicer._recheck",
            "AgentApiServicer._revisions",
        ),
        timeout=180,
    ),
    Target(
        name="agent-watch-hub",
        path="issuance/agentapi/watch.py",
        tests=("tests/issuance/test_agent_api_watch.py", "tests/issuance/test_change_events.py"),
        # which streams a tenant's change wakes (never another tenant's), and when
        functions=("Watcher", "ChangeHub.dispatch", "ChangeHub.subscribe", "ChangeHub.unsubscribe"),
        timeout=180,
    ),
    Target(
        name="agent-api-tls-credentials",
        path="issuance/agentapi/tls.py",
        tests=(
            "tests/issuance/test_agent_api_edge.py::test_a_new_tenant_is_learnt_from_its_event_but_its_credentials_wait_for_an_agent",
            "tests/issuance/test_agent_api_edge.py::test_a_handshake_naming_a_tenant_with_no_credentials_waits_for_them",
            "tests/issuance/test_agent_api_edge.py::test_what_a_first_handshake_waits_for_ends_when_the_build_does",
            "tests/issuance/test_agent_api_edge.py::test_a_handshake_waits_for_credentials_no_longer_than_its_deadline",
            "tests/issuance/test_agent_api_edge.py",
            "tests/issuance/test_agentapi_tls_authority.py",
        ),
        # which tenants' server SVIDs a process builds and when (a signup builds none in the
        # agent API), and what a first handshake waits for
        functions=(
            "TenantCredentials.build_awaited",
            "TenantCredentials.bundle_changed",
            "TenantCredentials._held_or_building",
            "TenantCredentials._learn",
            "TenantCredentials._known",
            "TenantCredentials._background",
        ),
        timeout=240,
    ),
    Target(
        name="agent-api-peer",
        path="issuance/agentapi/server.py",
        tests=(
            "tests/issuance/test_agent_api_watch.py",
            "tests/issuance/test_agent_api_edge.py",
            "tests/security/test_agent_api_matrix.py",
        ),
        # which tenant and certificate a relayed connection carries into the servicer
        functions=("AgentApiServer._identify",),
        timeout=240,
    ),
    Target(
        name="agent-api-stream-drain",
        path="issuance/agentapi/drain.py",
        tests=(
            "tests/issuance/test_agent_api_drain.py::test_a_method_the_agent_api_does_not_have_is_unimplemented_not_a_failure",
            "tests/issuance/test_agent_api_watch.py::test_a_stream_its_agent_leaves_ends_at_once_and_leaves_no_watcher_behind",
            "tests/issuance/test_agent_api_drain.py",
        ),
        # a server stream ends with its call (an agent gone leaves no stream running) and on
        # a drain; new streams refused while draining
        functions=("StreamDrain",),
        timeout=180,
    ),
    Target(
        name="operator-agent-counts",
        path="issuance/services/agents.py",
        tests=("tests/issuance/test_agent_counts.py",),
        functions=("unbanned_agent_counts",),
        timeout=120,
    ),
    Target(
        name="entry-authorisation",
        path="issuance/services/entries.py",
        tests=(
            "tests/issuance/test_agent_api_entries.py",
            "tests/issuance/test_agent_api_jwt.py",
            "tests/issuance/test_agent_api_sync.py",
            "tests/security/test_fuzz_agent_api.py",
        ),
        functions=("_authorized", "authorized_entries_by_id"),
        timeout=300,
    ),
    Target(
        name="entry-quota",
        path="tenants/billing/quotas.py",
        tests=(
            "tests/tenants/test_billing.py::test_a_tenant_over_a_lowered_limit_is_refused_and_an_unlimited_one_is_never_counted",
            "tests/tenants/test_billing.py::test_an_entry_past_max_entries_is_403_quota_exceeded_and_not_stored",
            "tests/tenants/test_billing.py::test_a_batch_past_max_entries_is_refused_as_a_whole",
            "tests/tenants/test_billing.py::test_the_plan_quota_applies_and_the_tenant_override_wins",
        ),
        # the entry quota, counted only under a limit and only up to it: a hole here lets a
        # tenant register past its plan
        functions=("check_entries", "effective_quotas"),
        timeout=120,
    ),
    Target(
        name="entry-batch-quota",
        path="issuance/services/batch.py",
        tests=(
            "tests/tenants/test_billing.py::test_a_batch_past_max_entries_is_refused_as_a_whole",
            "tests/issuance/test_entries_batch.py",
        ),
        functions=("batch_create_entries",),
        timeout=180,
    ),
    Target(
        name="jwt-svid-minting",
        path="issuance/services/jwt_svids.py",
        tests=(
            "tests/issuance/test_svid_request_limits.py",
            "tests/issuance/test_agent_api_jwt.py",
        ),
        timeout=300,
    ),
    Target(
        name="x509-svid-minting",
        path="issuance/services/svids.py",
        tests=(
            "tests/issuance/test_svid_request_limits.py",
            "tests/issuance/test_agent_api_entries.py",
        ),
        timeout=300,
    ),
    Target(
        name="relay-limits",
        path="hallmark/relaylimits.py",
        tests=(
            "tests/hallmark/test_relay_limits_edges.py",
            "tests/hallmark/test_relay_limits.py",
        ),
        timeout=120,
    ),
    Target(
        name="relay-edge-refusals",
        path="hallmark/relay.py",
        tests=(
            "tests/hallmark/test_relay_server_names.py",
            "tests/hallmark/test_relay_limits.py",
            "tests/hallmark/test_relay_peers.py",
        ),
        # what the agent API's public listener refuses before TLS: a source over its limits,
        # a refused source, an unknown server name (answered at once or after the tarpit);
        # what an admitted name waits for before TLS, and for how long
        functions=(
            "Relay._accepted",
            "Relay._decide",
            "Relay._hold",
            "Relay._wait_before_handshake",
            "wait_before_handshake",
            "PeerRegistry.disconnect",
        ),
        timeout=120,
    ),
    Target(
        name="bundle-endpoint-first-handshake",
        path="federation/endpoint.py",
        tests=(
            "tests/federation/test_bundle_endpoint.py::test_the_first_fetch_after_a_restart_is_served_not_failed",
            "tests/federation/test_bundle_endpoint.py",
        ),
        # what a federation peer's handshake waits for before TLS (its tenant's server SVID
        # being built), what it peeks at to know, and that nothing is left behind
        functions=("BundleEndpointServer._connection", "_server_name"),
        timeout=120,
    ),
    Target(
        name="attestation-failure-limits",
        path="issuance/agentapi/limits.py",
        tests=("tests/issuance/test_agentapi_limits.py", "tests/hallmark/test_relay_limits.py"),
        functions=(
            "AttestationFailures.blocked",
            "AttestationFailures.refuses_connection",
            "AttestationFailures._mark_over",
            "AttestationFailures._locally_blocked",
            "AttestationFailures._count",
        ),
        timeout=120,
    ),
    Target(
        name="workload-grpc-connection",
        path="agent/workload/grpcserver.py",
        tests=("tests/agent/test_workload_grpc_server.py", "tests/agent/test_workload_binding.py"),
        # the caller bound at connect time, what one connection's requests may hold, and how
        # many connections a uid and the agent may hold
        functions=(
            "_Connection.connection_made",
            "_Connection.connection_lost",
            "_Connection._request",
            "_Connection._data",
            "GrpcUnixServer._admit",
            "GrpcUnixServer._release",
            "connection_budget",
        ),
        timeout=120,
    ),
    Target(
        name="socket-directory",
        path="agent/workload/socketdir.py",
        tests=("tests/agent/test_socket_dir_edges.py", "tests/agent/test_socket_dir.py"),
        timeout=120,
    ),
    Target(
        name="connected-process",
        path="attestors/workload/process.py",
        tests=(
            "tests/attestors/test_process_binding.py",
            "tests/attestors/test_exe_hash_cache.py",  # the cache and limit passed through
            "tests/agent/test_workload_binding.py",
        ),
        timeout=180,
    ),
    Target(
        name="fetch-write",
        path="agent/workload/fetch.py",
        tests=("tests/agent/test_fetch_write.py", "tests/agent/test_cli.py"),
        timeout=180,
    ),
    Target(
        name="node-attestor-agent-path",
        path="attestors/node/agentpath.py",
        tests=(
            "tests/attestors/test_node_agentpath.py",
            "tests/attestors/test_node_x509pop.py",
            "tests/attestors/test_node_aws_iid.py",
            "tests/attestors/test_node_cloud_tokens.py",
        ),
        timeout=120,
    ),
    Target(
        name="node-attestor-jwt-proof",
        path="attestors/node/jwtproof.py",
        tests=(
            "tests/attestors/test_node_jwtproof.py",
            "tests/attestors/test_node_cloud_tokens.py",
            "tests/attestors/test_node_k8s_psat.py",
        ),
        timeout=120,
    ),
    Target(
        name="node-attestor-catalog",
        path="attestors/node/catalog.py",
        tests=("tests/attestors/test_node_catalog.py", "tests/issuance/test_node_attestors_api.py"),
        timeout=120,
    ),
    Target(
        name="node-attestor-aws-iid",
        path="attestors/node/aws_iid.py",
        tests=("tests/attestors/test_node_aws_iid.py",),
        timeout=120,
    ),
    Target(
        name="node-attestor-aws-api",
        path="attestors/node/awsapi.py",
        tests=("tests/attestors/test_node_aws_iid.py",),
        timeout=120,
    ),
    Target(
        name="node-attestor-gcp-iit",
        path="attestors/node/gcp_iit.py",
        tests=("tests/attestors/test_node_cloud_tokens.py",),
        timeout=120,
    ),
    Target(
        name="node-attestor-azure-msi",
        path="attestors/node/azure_msi.py",
        tests=("tests/attestors/test_node_cloud_tokens.py",),
        timeout=120,
    ),
    Target(
        name="node-attestor-k8s-psat",
        path="attestors/node/k8s_psat.py",
        tests=("tests/attestors/test_node_k8s_psat.py",),
        timeout=120,
    ),
)
