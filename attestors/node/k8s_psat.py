"""k8s_psat: the node proves itself with a projected service-account token of its agent pod.

Agent → server: `{"cluster": <name>, "token": <the projected token>}` (SPIRE's payload).
The server half checks the token against the tenant's settings for that cluster, either with
the cluster's published keys (`jwks` inline or `jwks_url`, the API server's
`/openid/v1/jwks`) or by a TokenReview (`token_review_url`, with `token_review_token`):
audience, issuer, expiry (with clock skew), and the `namespace:service-account` allow list.
The agent ID is SPIRE's `k8s_psat/<cluster>/<node UID>` (`k8s_psat/<cluster>/pod/<pod UID>`
with `use_pod_uid_for_agent_id`); selectors as SPIRE's
(`k8s_psat:cluster:`, `:agent_ns:`, `:agent_sa:`, `:agent_pod_name:`, `:agent_pod_uid:`,
`:agent_node_name:`, `:agent_node_uid:`). A token attests once (replay protection).

With API-server access for the cluster (`api_server_url`, and `api_server_token` or else the
TokenReview credential), the server half does what SPIRE's does with its kubeconfig: it GETs
the agent's Pod and that pod's Node, refuses a pod whose UID is not the token's, takes the
node UID (and so the agent ID) from the Node, and adds `:agent_node_ip:` (the pod's
`status.hostIP`) and `:agent_pod_label:<k>:<v>` / `:agent_node_label:<k>:<v>` for the label
keys in `allowed_pod_label_keys` / `allowed_node_label_keys`. An API it cannot read refuses
the attestation (never fewer selectors).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt

from attestors.node.base import (
    DEFAULT_CLOCK_SKEW,
    AgentAttestor,
    AttestedNode,
    InvalidAttestationPayload,
    InvalidAttestorConfig,
    NodeAttestationFailed,
    NodeLookup,
    ServerAttestor,
    require_keys,
    string_list,
)
from attestors.node.jwtproof import (
    MAX_TOKEN,
    expiry,
    fetch_json,
    proof_id,
    unverified_claims,
    verify_jwt,
)

ATTESTATION_TYPE = "k8s_psat"
DEFAULT_AUDIENCE = ["spire-server"]
DEFAULT_TOKEN_PATH = "/var/run/secrets/tokens/spire-agent"  # noqa: S105 - a path
_STRING_SETTINGS = (
    "issuer",
    "jwks_url",
    "token_review_url",
    "token_review_token",
    "ca_bundle_pem",
    "api_server_url",
    "api_server_token",
)
_CLUSTER_KEYS = {
    "service_account_allow_list",
    "audience",
    "jwks",
    *_STRING_SETTINGS,
    "allowed_node_label_keys",
    "allowed_pod_label_keys",
    "use_pod_uid_for_agent_id",
}
_VERIFIERS = ("jwks", "jwks_url", "token_review_url")


def _cluster_config(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidAttestorConfig(f"clusters.{name} must be an object", code="invalid_setting")
    require_keys(value, known=_CLUSTER_KEYS, required=frozenset({"service_account_allow_list"}))
    allow = string_list(value, "service_account_allow_list")
    if not allow or not all(a.count(":") == 1 and all(a.split(":")) for a in allow):
        raise InvalidAttestorConfig(
            f"clusters.{name}.service_account_allow_list must list 'namespace:service-account'",
            code="invalid_service_account_allow_list",
        )
    audience = string_list(value, "audience") if "audience" in value else DEFAULT_AUDIENCE
    chosen = [v for v in _VERIFIERS if value.get(v)]
    if len(chosen) != 1:
        raise InvalidAttestorConfig(
            f"clusters.{name} needs exactly one of jwks, jwks_url, token_review_url",
            code="invalid_verifier",
        )
    config: dict[str, Any] = {"service_account_allow_list": allow, "audience": audience}
    for key in _STRING_SETTINGS:
        if key in value:
            if not isinstance(value[key], str) or not value[key]:
                raise InvalidAttestorConfig(
                    f"clusters.{name}.{key} must be a non-empty string", code="invalid_setting"
                )
            config[key] = value[key]
    for key in ("jwks_url", "token_review_url"):
        if key in config and not config[key].startswith("https://"):
            raise InvalidAttestorConfig(
                f"clusters.{name}.{key} must be an https:// URL", code="invalid_url"
            )
    if "token_review_url" in config and "token_review_token" not in config:
        raise InvalidAttestorConfig(
            f"clusters.{name}.token_review_url needs token_review_token", code="missing_setting"
        )
    _api_server_config(name, value, config)
    if _flag(name, value, "use_pod_uid_for_agent_id"):
        config["use_pod_uid_for_agent_id"] = True
    if "jwks" in value:
        try:
            jwt.PyJWKSet.from_dict(value["jwks"])
        except (jwt.PyJWTError, TypeError, KeyError, AttributeError):
            raise InvalidAttestorConfig(
                f"clusters.{name}.jwks is not a usable JWKS", code="invalid_jwks"
            ) from None
        config["jwks"] = value["jwks"]
    return config


def _flag(name: str, value: Mapping[str, Any], key: str) -> bool:
    flag = value.get(key, False)
    if not isinstance(flag, bool):
        raise InvalidAttestorConfig(
            f"clusters.{name}.{key} must be true or false", code="invalid_setting"
        )
    return flag


def _base_url(url: str) -> bool:
    """An https URL without query or fragment; a path is allowed (an API server behind a
    proxy lives under one, e.g. Rancher's `/k8s/clusters/<id>`)."""
    try:
        parts = urllib.parse.urlsplit(url)
        hostname = parts.hostname
        _ = parts.port
    except ValueError:
        return False
    return parts.scheme == "https" and bool(hostname) and not parts.query and not parts.fragment


def _api_server_config(name: str, value: Mapping[str, Any], config: dict[str, Any]) -> None:
    """SPIRE's API-server access (its `kube_config_file`) and the label keys that need it."""
    for key in ("allowed_node_label_keys", "allowed_pod_label_keys"):
        if key in value:
            config[key] = string_list(value, key)
    if "api_server_url" not in config:
        needs = [
            k
            for k in ("api_server_token", "allowed_node_label_keys", "allowed_pod_label_keys")
            if k in value
        ]
        if needs:
            raise InvalidAttestorConfig(
                f"clusters.{name}.{needs[0]} needs api_server_url", code="missing_setting"
            )
        return
    if not _base_url(config["api_server_url"]):
        raise InvalidAttestorConfig(
            f"clusters.{name}.api_server_url must be an https:// URL without query",
            code="invalid_url",
        )
    config["api_server_url"] = config["api_server_url"].rstrip("/")
    if "api_server_token" not in config and "token_review_token" not in config:
        raise InvalidAttestorConfig(
            f"clusters.{name}.api_server_url needs api_server_token (or token_review_token)",
            code="missing_setting",
        )


def parse_payload(payload: bytes) -> tuple[str, str]:
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise InvalidAttestationPayload("k8s_psat attestation data is not JSON") from None
    cluster = document.get("cluster") if isinstance(document, dict) else None
    token = document.get("token") if isinstance(document, dict) else None
    if not isinstance(cluster, str) or not cluster or not isinstance(token, str) or not token:
        raise InvalidAttestationPayload(
            'k8s_psat attestation data must be {"cluster": "<name>", "token": "<token>"}'
        )
    if len(token) > MAX_TOKEN:
        raise InvalidAttestationPayload(f"k8s_psat token is longer than {MAX_TOKEN} bytes")
    return cluster, token


class K8sPsatServer(ServerAttestor):
    """Verifies projected service-account tokens for the tenant's configured clusters."""

    type = ATTESTATION_TYPE
    can_reattest = True

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        require_keys(config, known={"clusters"}, required=frozenset({"clusters"}))
        clusters = config["clusters"]
        if not isinstance(clusters, Mapping) or not clusters:
            raise InvalidAttestorConfig(
                "clusters must map cluster names to their settings", code="invalid_setting"
            )
        return {"clusters": {str(k): _cluster_config(str(k), v) for k, v in clusters.items()}}

    def attest(
        self,
        payload: bytes,
        *,
        challenge: bytes | None,
        response: bytes | None,
        lookup: NodeLookup,
    ) -> AttestedNode:
        cluster_name, token = parse_payload(payload)
        cluster = self.config["clusters"].get(cluster_name)
        if cluster is None:
            raise NodeAttestationFailed(
                f"cluster {cluster_name!r} is not configured for k8s_psat", code="unknown_cluster"
            )
        if "token_review_url" in cluster:
            identity = self._token_review(cluster, token, lookup)
        else:
            identity = self._verify_with_keys(cluster, token, lookup)
        namespace, account = identity["namespace"], identity["service_account"]
        if f"{namespace}:{account}" not in cluster["service_account_allow_list"]:
            raise NodeAttestationFailed(
                f"service account {namespace}:{account} is not allowed for cluster "
                f"{cluster_name!r}",
                code="service_account_not_allowed",
            )
        if "api_server_url" in cluster:
            identity.update(self._from_api_server(cluster_name, cluster, identity, lookup))
        node_uid = identity.get("node_uid") or ""
        if not node_uid:
            raise NodeAttestationFailed(
                "the token names no node (projected tokens of Kubernetes 1.30+ carry it; "
                "or give the cluster's api_server_url)",
                code="token_missing_node",
            )
        selectors = {
            f"k8s_psat:cluster:{cluster_name}",
            f"k8s_psat:agent_ns:{namespace}",
            f"k8s_psat:agent_sa:{account}",
        }
        for key in ("pod_name", "pod_uid", "node_name", "node_uid", "node_ip"):
            if identity.get(key):
                selectors.add(f"k8s_psat:agent_{key}:{identity[key]}")
        selectors.update(identity.get("label_selectors", ()))
        suffix = node_uid
        if cluster.get("use_pod_uid_for_agent_id"):  # SPIRE's, for several agents on a node
            if not identity.get("pod_uid"):
                raise NodeAttestationFailed(
                    "the token names no pod UID (use a projected token)", code="token_not_bound"
                )
            suffix = f"pod/{identity['pod_uid']}"
        return AttestedNode(
            agent_path=f"k8s_psat/{cluster_name}/{suffix}",
            selectors=tuple(sorted(selectors)),
            can_reattest=True,
            proof_id=proof_id(ATTESTATION_TYPE, token),
            proof_expires_at=identity["expires_at"],
            detail={"cluster": cluster_name, "pod_uid": identity.get("pod_uid", "")},
        )

    # -- the agent's Pod and Node from the API server (SPIRE's kubeconfig lookups) ----------
    def _from_api_server(
        self,
        cluster_name: str,
        cluster: Mapping[str, Any],
        identity: Mapping[str, Any],
        lookup: NodeLookup,
    ) -> dict[str, Any]:
        pod_name, pod_uid = identity.get("pod_name") or "", identity.get("pod_uid") or ""
        if not pod_name or not pod_uid:
            raise NodeAttestationFailed(
                "the token names no pod (use a projected token)", code="token_not_bound"
            )
        quote = urllib.parse.quote
        pod = _kube_get(
            lookup,
            cluster,
            f"/api/v1/namespaces/{quote(identity['namespace'], safe='')}/pods/"
            f"{quote(pod_name, safe='')}",
            missing="agent_pod_not_found",
        )
        if _meta(pod, "uid") != pod_uid:
            raise NodeAttestationFailed(
                f"pod {identity['namespace']}/{pod_name} of cluster {cluster_name!r} is not the "
                f"pod the token is bound to (UID {pod_uid})",
                code="pod_uid_mismatch",
            )
        spec, status = pod.get("spec"), pod.get("status")
        node_name = spec.get("nodeName") if isinstance(spec, dict) else None
        if not isinstance(node_name, str) or not node_name:
            raise NodeAttestationFailed(
                f"pod {identity['namespace']}/{pod_name} is not scheduled on a node",
                code="agent_pod_not_scheduled",
            )
        node = _kube_get(
            lookup,
            cluster,
            f"/api/v1/nodes/{quote(node_name, safe='')}",
            missing="agent_node_not_found",
        )
        node_uid = _meta(node, "uid")
        if not node_uid:
            raise NodeAttestationFailed(
                f"node {node_name} has no UID in the API server's answer",
                code="attestor_unreachable",
            )
        host_ip = status.get("hostIP") if isinstance(status, dict) else None
        labels = [
            f"k8s_psat:agent_node_label:{key}:{value}"
            for key, value in _labels(node).items()
            if key in cluster.get("allowed_node_label_keys", ())
        ] + [
            f"k8s_psat:agent_pod_label:{key}:{value}"
            for key, value in _labels(pod).items()
            if key in cluster.get("allowed_pod_label_keys", ())
        ]
        return {
            "node_name": node_name,
            "node_uid": node_uid,
            "node_ip": host_ip if isinstance(host_ip, str) else "",
            "label_selectors": labels,
        }

    # -- verification by the cluster's published keys ---------------------------------------
    def _verify_with_keys(
        self, cluster: Mapping[str, Any], token: str, lookup: NodeLookup
    ) -> dict[str, Any]:
        claims = verify_jwt(
            token,
            lookup=lookup,
            audience=cluster["audience"],
            issuer=cluster.get("issuer"),
            jwks=cluster.get("jwks"),
            jwks_url=cluster.get("jwks_url"),
            ca_bundle_pem=cluster.get("ca_bundle_pem", ""),
        )
        return _identity_from_claims(claims)

    # -- verification by TokenReview --------------------------------------------------------
    def _token_review(
        self, cluster: Mapping[str, Any], token: str, lookup: NodeLookup
    ) -> dict[str, Any]:
        unverified = unverified_claims(token)
        expires = expiry(unverified)
        if expires + DEFAULT_CLOCK_SKEW < self.now():
            raise NodeAttestationFailed("the token has expired", code="token_expired")
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": cluster["audience"]},
        }
        answer = fetch_json(
            lookup,
            "POST",
            cluster["token_review_url"],
            ca=cluster.get("ca_bundle_pem", ""),
            body=json.dumps(review).encode(),
            headers={
                "Authorization": f"Bearer {cluster['token_review_token']}",
                "Content-Type": "application/json",
            },
        )
        status = answer.get("status") if isinstance(answer, dict) else None
        if not isinstance(status, dict) or not status.get("authenticated"):
            error = status.get("error", "") if isinstance(status, dict) else ""
            raise NodeAttestationFailed(
                f"the cluster did not authenticate the token: {error}"[:300],
                code="token_review_denied",
            )
        audiences = status.get("audiences") or []
        if not set(audiences) & set(cluster["audience"]):
            raise NodeAttestationFailed(
                "the token's audience is not one configured", code="invalid_audience"
            )
        user = status.get("user") or {}
        username = str(user.get("username", ""))
        parts = username.split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:  # noqa: PLR2004
            raise NodeAttestationFailed(
                f"the token is not a service-account token ({username!r})", code="invalid_token"
            )
        extra = user.get("extra") or {}

        def first(name: str) -> str:
            values = extra.get(f"authentication.kubernetes.io/{name}") or []
            return str(values[0]) if values else ""

        return {
            "namespace": parts[2],
            "service_account": parts[3],
            "pod_name": first("pod-name"),
            "pod_uid": first("pod-uid"),
            "node_name": first("node-name"),
            "node_uid": first("node-uid"),
            "expires_at": expires,
        }


def _kube_get(
    lookup: NodeLookup, cluster: Mapping[str, Any], path: str, *, missing: str
) -> dict[str, Any]:
    """One object from the API server; 404 is `missing`, anything else not 200 unreachable."""
    url = cluster["api_server_url"] + path
    token = cluster.get("api_server_token") or cluster["token_review_token"]
    answer = lookup.https(
        "GET",
        url,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        ca_bundle_pem=cluster.get("ca_bundle_pem") or None,
    )
    if answer.status == 404:  # noqa: PLR2004
        raise NodeAttestationFailed(f"{path} does not exist on the API server", code=missing)
    if answer.status != 200:  # noqa: PLR2004
        raise NodeAttestationFailed(
            f"the API server answered HTTP {answer.status} to GET {path}",
            code="attestor_unreachable",
        )
    try:
        document = json.loads(answer.body)
    except (ValueError, UnicodeDecodeError):
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("metadata"), dict):
        raise NodeAttestationFailed(
            f"the API server's answer to GET {path} is not an object", code="attestor_unreachable"
        )
    return document


def _meta(obj: Mapping[str, Any], name: str) -> str:
    value = obj["metadata"].get(name)
    return value if isinstance(value, str) else ""


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    labels = obj["metadata"].get("labels")
    if not isinstance(labels, dict):
        return {}
    return {str(k): str(v) for k, v in labels.items()}


def _identity_from_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    k8s = claims.get("kubernetes.io")
    if not isinstance(k8s, dict):
        raise NodeAttestationFailed(
            "the token has no kubernetes.io claim: not a projected service-account token",
            code="invalid_token",
        )

    def part(name: str, field: str) -> str:
        value = k8s.get(name)
        return str(value.get(field, "")) if isinstance(value, dict) else ""

    namespace, account = str(k8s.get("namespace", "")), part("serviceaccount", "name")
    if not namespace or not account:
        raise NodeAttestationFailed(
            "the token names no namespace or service account", code="invalid_token"
        )
    if not part("pod", "uid"):
        raise NodeAttestationFailed(
            "the token is not bound to a pod (use a projected token)", code="token_not_bound"
        )
    return {
        "namespace": namespace,
        "service_account": account,
        "pod_name": part("pod", "name"),
        "pod_uid": part("pod", "uid"),
        "node_name": part("node", "name"),
        "node_uid": part("node", "uid"),
        "expires_at": expiry(claims),
    }


class K8sPsatAgent(AgentAttestor):
    """The agent half: SPIRE's `cluster` and `token_path`; the token is read on every use."""

    type = ATTESTATION_TYPE
    can_reattest = True

    def __init__(self, cluster: str, token_path: str = DEFAULT_TOKEN_PATH) -> None:
        self.cluster = cluster
        self.token_path = token_path

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> K8sPsatAgent:
        cluster = settings.get("cluster")
        if not isinstance(cluster, str) or not cluster:
            raise InvalidAttestorConfig(
                "[node_attestor.k8s_psat] needs cluster", code="missing_setting"
            )
        path = settings.get("token_path", DEFAULT_TOKEN_PATH)
        return cls(cluster, str(path))

    def payload(self) -> bytes:
        token = Path(self.token_path).read_text(encoding="utf-8").strip()
        return json.dumps({"cluster": self.cluster, "token": token}).encode()
