"""deploy/terraform's metrics: a scrape port on every process kind that records metrics (the
supervisor's METRICS_KINDS), off the public Services."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.deploy.terraform_module import MODULE, Module, first, process_container


def test_every_metrics_kind_serves_metrics_on_its_own_port(module: Module):
    container = process_container(module)
    ports = [first(d["port"]["content"]) for d in container["dynamic"] if "port" in d]
    metrics = [port for port in ports if port["name"] == "metrics"]
    env = module.locals["metrics_env"]

    assert [port["container_port"] for port in metrics] == ["${port.value}"]
    assert "[var.metrics_port]" in json.dumps(container["dynamic"])
    assert "HALLMARK_METRICS_LISTEN" in env and "PROMETHEUS_MULTIPROC_DIR" in env
    assert module.locals["multiprocess_kinds"] == ["web", "worker"]
    assert module.variables["metrics_port"]["default"] == 9100


def test_the_public_services_do_not_expose_the_metrics_port(module: Module):
    for name in ("web", "agent_api", "bundle_endpoint"):
        service = module.resource("kubernetes_service_v1", name)
        ports = first(service["spec"])["port"]
        assert all(port.get("target_port") != "metrics" for port in ports), name
        assert all(port.get("name") != "metrics" for port in ports), name
    metrics = module.resource("kubernetes_service_v1", "metrics")
    assert first(metrics["spec"])["cluster_ip"] == "None"


def test_the_operator_resources_scrape_the_metrics_services_and_alert(module: Module):
    monitor = module.resource("kubernetes_manifest", "service_monitor")["manifest"]
    rules = module.resource("kubernetes_manifest", "alerts")["manifest"]

    assert monitor["kind"] == "ServiceMonitor" and rules["kind"] == "PrometheusRule"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    names = {alert["alert"] for alert in module.locals["alerts"]}
    assert {"HallmarkProcessDown", "HallmarkRotationFailing", "HallmarkHttpErrors"} <= names
    runbook = (MODULE / "README.md").read_text().split("## Runbook", 1)[1]
    for alert in module.locals["alerts"]:
        section = re.search(r"runbook: ([^)]+)\)", alert["annotations"]["summary"])
        assert section, alert["alert"]
        assert f"**{section.group(1)}**" in runbook, alert["alert"]
        assert "tenant" not in alert["expr"]


def test_every_alert_names_only_metrics_hallmark_serves(module: Module):
    # Exported names: config.metrics' families and beat's scrape-time gauges (config.beatmetrics).
    from prometheus_client.registry import REGISTRY

    from config import beatmetrics, metrics  # noqa: F401 - importing registers the families

    served = {family.name for family in REGISTRY.collect()}
    served |= set(re.findall(r'"(hallmark_[a-z_]+)"', Path(beatmetrics.__file__).read_text()))
    for alert in module.locals["alerts"]:
        for name in re.findall(r"hallmark_[a-z_]+", alert["expr"]):
            base = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert base in served, (alert["alert"], name)
