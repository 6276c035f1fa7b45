"""A tenant on the session's `hallmark up`, a registrar token, and the fake Kubernetes API."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from registrar.controller import Registrar, Settings
from registrar.hallmark_api import HallmarkApi
from registrar.kube import KubeClient, KubeConfig
from tests.registrar.fake_kube_api import FakeKubeApi

CLUSTER = "eu-prod"
SPIFFE_ID_TEMPLATE = (
    "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}"
)


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Tenant:
    """A tenant of the plane: its trust domain, owner token and a registrar token."""

    plane: Any
    trust_domain: str
    owner: str
    registrar: str
    prefix: str

    def entries(self, token: str | None = None) -> list[dict[str, Any]]:
        answer = self.plane.call(token or self.owner, "GET", "entries")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return list(body["results"] if isinstance(body, dict) else body)

    def create(self, **fields: Any) -> dict[str, Any]:
        answer = self.plane.call(self.owner, "POST", "entries", json=fields)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def node_alias(self, node: str = "worker-eu-1") -> str:
        return f"spiffe://{self.trust_domain}/k8s-node/{CLUSTER}/{node}"


def make_tenant(plane: Any, label: str) -> Tenant:
    signup = plane.signup(label)
    td = signup["trust_domain"]
    prefix = f"spiffe://{td}/ns/"
    made = plane.call(
        signup["token"],
        "POST",
        "api-tokens",
        json={"name": f"registrar-{CLUSTER}", "role": "registrar", "spiffe_id_prefix": prefix},
    )
    assert made.status_code == 201, made.text
    return Tenant(plane, td, signup["token"], made.json()["token"], made.json()["spiffe_id_prefix"])


@contextmanager
def running_registrar(
    kube: FakeKubeApi, tenant: Tenant, directory: Path, **settings: Any
) -> Iterator[Registrar]:
    """`hallmark-registrar` in this process (its threads), reading the fake cluster through a
    kubeconfig and writing the tenant's entries with the registrar token."""
    config = KubeConfig.from_kubeconfig(kube.kubeconfig(directory))
    registrar = Registrar(
        KubeClient(config),
        HallmarkApi(tenant.plane.http, tenant.registrar),
        Settings(
            cluster_name=CLUSTER,
            **{"resync": 3600.0, "settle": 0.05, "retry": 0.1, **settings},
        ),
    )
    registrar.start()
    try:
        wait_until(lambda: registrar.reconciles > 0 and registrar.idle.is_set(), "a reconcile")
        yield registrar
    finally:
        registrar.stop()


@pytest.fixture
def settled() -> Callable[[Registrar], None]:
    """Wait for the registrar to reconcile after what the test just did, and go idle."""

    def wait(registrar: Registrar) -> None:
        start = registrar.reconciles
        wait_until(lambda: registrar.reconciles > start and registrar.idle.is_set(), "a reconcile")

    return wait
