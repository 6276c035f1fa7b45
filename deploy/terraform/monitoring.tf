# Prometheus: a headless metrics Service per process kind that records metrics (not the
# bundle endpoint), and with the Prometheus operator a ServiceMonitor scraping them and a
# PrometheusRule with the alerts the runbook (README.md) explains. No label carries a tenant:
# per-tenant figures are the usage API's.

resource "kubernetes_service_v1" "metrics" {
  for_each = toset(local.metrics_kinds)

  metadata {
    name      = "${var.name}-${each.key}-metrics"
    namespace = local.namespace
    labels = merge(local.labels, {
      "app.kubernetes.io/component" = each.key
      "hallmark.io/metrics"         = "true"
    })
  }

  spec {
    # Headless: Prometheus scrapes every pod, not one picked by a virtual IP.
    cluster_ip = "None"
    selector   = merge(local.selector, { "app.kubernetes.io/component" = each.key })

    port {
      name        = "metrics"
      port        = var.metrics_port
      target_port = "metrics"
      protocol    = "TCP"
    }
  }
}

resource "kubernetes_manifest" "service_monitor" {
  count = var.prometheus_operator ? 1 : 0

  manifest = {
    apiVersion = "monitoring.coreos.com/v1"
    kind       = "ServiceMonitor"
    metadata = {
      name      = var.name
      namespace = local.namespace
      labels    = merge(local.labels, var.prometheus_labels)
    }
    spec = {
      selector = {
        matchLabels = merge(local.selector, { "hallmark.io/metrics" = "true" })
      }
      endpoints = [{
        port     = "metrics"
        path     = "/metrics"
        interval = "30s"
        # The process kind (web, agent-api, worker, beat) as a label of every series.
        relabelings = [{
          sourceLabels = ["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
          targetLabel  = "component"
        }]
      }]
    }
  }
}

resource "kubernetes_manifest" "alerts" {
  count = var.prometheus_operator ? 1 : 0

  manifest = {
    apiVersion = "monitoring.coreos.com/v1"
    kind       = "PrometheusRule"
    metadata = {
      name      = var.name
      namespace = local.namespace
      labels    = merge(local.labels, var.prometheus_labels)
    }
    spec = {
      groups = [{
        name  = "hallmark"
        rules = local.alerts
      }]
    }
  }
}

locals {
  # Scoped to this release's series by namespace and metrics Service.
  scope = "namespace=\"${local.namespace}\",service=~\"${var.name}-.*-metrics\""

  alerts = [
    {
      alert       = "HallmarkProcessDown"
      expr        = "up{${local.scope}} == 0"
      for         = "5m"
      labels      = { severity = "critical" }
      annotations = { summary = "A Hallmark {{ $labels.component }} pod does not answer /metrics (runbook: Process down)." }
    },
    {
      alert       = "HallmarkHttpErrors"
      expr        = "sum(rate(hallmark_http_requests_total{${local.scope},status=~\"5..\"}[5m])) / sum(rate(hallmark_http_requests_total{${local.scope}}[5m])) > 0.05"
      for         = "10m"
      labels      = { severity = "critical" }
      annotations = { summary = "More than 5% of REST requests answer 5xx (runbook: Errors)." }
    },
    {
      alert       = "HallmarkHttpSlow"
      expr        = "histogram_quantile(0.99, sum by (le) (rate(hallmark_http_request_duration_seconds_bucket{${local.scope}}[5m]))) > 2"
      for         = "15m"
      labels      = { severity = "warning" }
      annotations = { summary = "REST p99 latency above 2 s (runbook: Slow)." }
    },
    {
      alert       = "HallmarkAgentApiErrors"
      expr        = "sum(rate(hallmark_agentapi_calls_total{${local.scope},code=~\"UNKNOWN|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED\"}[5m])) / sum(rate(hallmark_agentapi_calls_total{${local.scope}}[5m])) > 0.05"
      for         = "10m"
      labels      = { severity = "critical" }
      annotations = { summary = "More than 5% of agent API calls fail on the server's side (runbook: Errors)." }
    },
    {
      alert       = "HallmarkAttestationFailures"
      expr        = "sum(rate(hallmark_attestations_total{${local.scope},outcome!=\"ok\"}[10m])) > 1"
      for         = "15m"
      labels      = { severity = "warning" }
      annotations = { summary = "Node attestations fail at more than 1/s (runbook: Attestation failures)." }
    },
    {
      alert       = "HallmarkRotationFailing"
      expr        = "sum(increase(hallmark_rotations_total{${local.scope},outcome=\"failed\"}[15m])) > 0"
      for         = "15m"
      labels      = { severity = "critical" }
      annotations = { summary = "Trust domain rotation fails: CAs will expire unrotated (runbook: Rotation)." }
    },
    {
      alert       = "HallmarkRotationStalled"
      expr        = "sum(increase(hallmark_rotations_total{${local.scope}}[10m])) == 0 or absent(hallmark_rotations_total{${local.scope}})"
      for         = "15m"
      labels      = { severity = "critical" }
      annotations = { summary = "No rotation check ran for 10 minutes: beat or every worker is down (runbook: Rotation)." }
    },
    {
      alert       = "HallmarkRotationSweepsSkipped"
      expr        = "sum(increase(hallmark_rotation_sweeps_total{${local.scope},outcome=\"skipped\"}[15m])) > 0"
      for         = "15m"
      labels      = { severity = "warning" }
      annotations = { summary = "Rotation sweeps take longer than their interval: add workers (runbook: Rotation)." }
    },
    {
      alert       = "HallmarkRotationLagging"
      expr        = "max by (kind) (hallmark_rotation_lag_seconds{${local.scope}}) > 600"
      for         = "10m"
      labels      = { severity = "critical" }
      annotations = { summary = "A tenant's active {{ $labels.kind }} authority is 10 minutes past its hand-over and none took over (runbook: Rotation)." }
    },
    {
      alert       = "HallmarkKeyManagerErrors"
      expr        = "sum by (kind, operation) (rate(hallmark_key_manager_errors_total{${local.scope},code!=\"key_access_denied\"}[5m])) > 0"
      for         = "10m"
      labels      = { severity = "critical" }
      annotations = { summary = "Key manager {{ $labels.kind }} fails {{ $labels.operation }} calls (runbook: Key manager)." }
    },
    {
      alert       = "HallmarkKeyManagerSlow"
      expr        = "histogram_quantile(0.99, sum by (le, kind) (rate(hallmark_key_manager_call_duration_seconds_bucket{${local.scope},operation=\"sign\"}[5m]))) > 0.5"
      for         = "15m"
      labels      = { severity = "warning" }
      annotations = { summary = "Key manager {{ $labels.kind }} signs with p99 above 0.5 s (runbook: Key manager)." }
    },
    {
      alert       = "HallmarkCeleryBacklog"
      expr        = "max by (queue) (hallmark_celery_queue_depth{${local.scope}}) > 1000"
      for         = "15m"
      labels      = { severity = "warning" }
      annotations = { summary = "More than 1,000 Celery messages wait in queue {{ $labels.queue }} (runbook: Rotation)." }
    },
    {
      alert       = "HallmarkCeleryTaskFailures"
      expr        = "sum by (task) (increase(hallmark_celery_tasks_total{${local.scope},state=\"failed\"}[15m])) > 0"
      for         = "15m"
      labels      = { severity = "warning" }
      annotations = { summary = "Celery task {{ $labels.task }} fails (runbook: Errors)." }
    },
  ]
}
