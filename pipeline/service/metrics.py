"""The service's Prometheus registry: webhook deliveries counted by outcome, and the state of
the work they announced. Built in one function, so the run metrics (pipeline.metrics) can be
registered beside them in the same registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

# Every outcome a delivery can have (each also a label value, so the series exist from the start).
OUTCOMES = ("accepted", "duplicate", "ignored", "unauthorized", "bad_request", "too_large", "timeout",
            "unavailable")


@dataclass
class ServiceMetrics:
    registry: CollectorRegistry
    webhooks: Counter  # labels: outcome
    archived: Counter  # announced recordings the worker archived
    worker_failures: Counter  # worker attempts that left work pending or failed
    reconciles: Counter
    worker_alive: Gauge

    def delivery(self, outcome: str) -> None:
        self.webhooks.labels(outcome=outcome).inc()


def build_service_registry(registry: CollectorRegistry | None = None) -> ServiceMetrics:
    """The service's metrics, in `registry` (e.g. the one that holds the run metrics) or a new one."""
    registry = registry if registry is not None else CollectorRegistry()
    webhooks = Counter("rtk_archive_webhooks", "RealtimeKit webhook deliveries received, by outcome",
                       ["outcome"], registry=registry)
    for outcome in OUTCOMES:
        webhooks.labels(outcome=outcome)
    return ServiceMetrics(
        registry=registry,
        webhooks=webhooks,
        archived=Counter("rtk_archive_serve_recordings_archived", "announced recordings archived by serve's worker",
                         registry=registry),
        worker_failures=Counter("rtk_archive_serve_worker_failures",
                                "worker attempts that left announced work pending or failed", registry=registry),
        reconciles=Counter("rtk_archive_serve_reconciles", "reconcile listings run by serve", registry=registry),
        worker_alive=Gauge("rtk_archive_serve_worker_alive", "1 while serve's in-process worker runs",
                           registry=registry),
    )
