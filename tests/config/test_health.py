"""`/healthz` (the whole control plane) and `/readyz` (one web process), against real servers."""

from __future__ import annotations

import logging

import pytest
import redis
from django.conf import settings

from config.health import HEARTBEAT_KEY, beat

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_heartbeats() -> None:
    """No agent API or worker has beaten on this Redis (as when they are being replaced)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    for component in ("agent-api", "worker"):
        client.delete(HEARTBEAT_KEY.format(component=component))


def test_readyz_is_200_for_a_web_process_while_healthz_waits_for_the_worker(api, no_heartbeats):
    # when neither an agent API nor a worker has beaten
    health = api.get("/healthz")
    ready = api.get("/readyz")

    # then the control plane is not healthy, but this web process is ready to serve
    assert health.status_code == 503
    assert health.json()["checks"]["worker"] == "down"
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_healthz_is_200_once_every_component_beats(api):
    # given fresh heartbeats of the agent API and the worker
    beat("agent-api")
    beat("bundle-endpoint")
    beat("worker")

    # then the whole plane is healthy (the database, Redis and OpenBao answer too)
    response = api.get("/healthz")
    assert response.status_code == 200, response.content
    assert set(response.json()["checks"]) == {
        "database",
        "vault",
        "redis",
        "agent-api",
        "bundle-endpoint",
        "worker",
    }


def test_readyz_is_503_naming_redis_when_it_is_unreachable(api, settings, caplog):
    # given this process's Redis address pointing at a closed port
    settings.REDIS_URL = "redis://127.0.0.1:9/0"

    # then the web process reports itself not ready, names the part, and logs why
    with caplog.at_level(logging.WARNING, logger="hallmark.health"):
        response = api.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "redis": "down"}
    assert "redis is down: error: ConnectionError" in caplog.text


def test_an_anonymous_caller_sees_up_or_down_per_part_but_no_error_text(api, settings, caplog):
    # given Redis and OpenBao unreachable (their errors name hosts, ports and libraries)
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    settings.VAULT_ADDR = "http://127.0.0.1:9"

    with caplog.at_level(logging.WARNING, logger="hallmark.health"):
        response = api.get("/healthz")

    # then the answer holds only "ok"/"down" per part; the details are in the logs
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert set(checks.values()) <= {"ok", "down"}
    assert checks["redis"] == checks["vault"] == "down"
    for leak in ("127.0.0.1", ":9", "Error", "error", "Connection", "sealed"):
        assert leak not in response.content.decode()
    assert "vault is down: error: ConnectionError" in caplog.text


def test_the_vault_key_manager_verifies_tls_with_the_configured_ca(settings, tmp_path):
    from trustdomains.keymanagers.vault import VaultTransitKeyManager

    # given HALLMARK_VAULT_CACERT
    settings.VAULT_CACERT = str(tmp_path / "vault-ca.pem")

    # then every Vault client of the key manager verifies against it, not the system roots
    manager = VaultTransitKeyManager.from_settings()
    assert manager._client("token").adapter._kwargs["verify"] == settings.VAULT_CACERT
    settings.VAULT_CACERT = None
    assert VaultTransitKeyManager.from_settings()._client("t").adapter._kwargs["verify"] is True
