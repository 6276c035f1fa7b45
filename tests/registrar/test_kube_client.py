"""The registrar's Kubernetes client against the fake API server: TLS, tokens, paging."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registrar.kube import KubeClient, KubeConfig, KubeError, WatchExpired
from tests.registrar.fake_kube_api import NAMESPACES, PODS, FakeKubeApi, fake_kube_api, pod


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubeApi]:
    with fake_kube_api(tmp_path_factory.mktemp("kube")) as server:
        for i in range(7):
            server.add(PODS, pod(f"billing-7d9f8b6c5-p{i}"))
        yield server


def test_a_list_is_read_page_by_page(kube: FakeKubeApi, tmp_path: Path) -> None:
    client = KubeClient(KubeConfig.from_kubeconfig(kube.kubeconfig(tmp_path)))

    items, version = client.list(PODS, limit=3)

    assert len(items) == 7
    assert version == str(kube.version)
    pages = [q for p, q in kube.requests if p == PODS and "continue" in q]
    assert len(pages) >= 2


def test_a_wrong_token_or_an_unknown_ca_is_refused(kube: FakeKubeApi, tmp_path: Path) -> None:
    config = KubeConfig.from_kubeconfig(kube.kubeconfig(tmp_path))
    with pytest.raises(KubeError, match="401"):
        KubeClient(KubeConfig(config.server, "not-the-token", config.ca_path)).list(PODS)
    with pytest.raises(KubeError, match="CERTIFICATE_VERIFY_FAILED"):
        KubeClient(KubeConfig(config.server, config.token, None)).list(PODS)


def test_a_watch_from_a_compacted_version_raises_watch_expired(
    kube: FakeKubeApi, tmp_path: Path
) -> None:
    client = KubeClient(KubeConfig.from_kubeconfig(kube.kubeconfig(tmp_path)))
    _, version = client.list(NAMESPACES)
    kube.add(NAMESPACES, {"metadata": {"name": "x", "uid": "ns-x"}})
    kube.compact()

    with pytest.raises(WatchExpired):
        next(iter(client.watch(NAMESPACES, version, timeout_seconds=5)))


def test_in_cluster_config_reads_the_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_text("ca")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")

    config = KubeConfig.in_cluster(tmp_path)

    assert config == KubeConfig("https://10.96.0.1:443", "sa-token", str(tmp_path / "ca.crt"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(KubeError):
        KubeConfig.in_cluster(tmp_path)


def test_a_yaml_kubeconfig_with_a_relative_ca_and_a_token_file_is_read(
    kube: FakeKubeApi, tmp_path: Path
) -> None:
    # given a kubeconfig as kubectl writes it (YAML), its CA beside it, the token in a file
    (tmp_path / "ca.crt").write_bytes(kube.pki.ca_path.read_bytes())
    (tmp_path / "token").write_text(kube.token + "\n")
    (tmp_path / "config").write_text(
        f"""apiVersion: v1
kind: Config
current-context: other
clusters:
- name: fake
  cluster:
    server: {kube.url}/
    certificate-authority: ca.crt
users:
- name: registrar
  user:
    tokenFile: {tmp_path / "token"}
contexts:
- name: other
  context: {{cluster: nowhere, user: nobody}}
- name: fake
  context: {{cluster: fake, user: registrar}}
"""
    )

    # when it is read for the context "fake", then the client lists with it
    config = KubeConfig.from_kubeconfig(tmp_path / "config", "fake")
    items, _ = KubeClient(config).list(PODS)

    assert config.server == kube.url
    assert len(items) == len(kube.objects[PODS])
    with pytest.raises(KubeError, match="no cluster named 'nowhere'"):
        KubeConfig.from_kubeconfig(tmp_path / "config")
