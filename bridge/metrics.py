"""Prometheus metrics of one bridge (shared/design.md §8), in a registry of its own.

Names are prefixed ``eg_bridge_``; label values are fixed words (never message data, never
secrets). Counters live as long as the process, across broker reconnects.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PUBLISH_FAILURE_REASONS = (
    "timeout", "network", "throttled", "server_error", "auth", "forbidden", "not_found",
    "bad_request",
)
DEAD_LETTER_REASONS = ("event_too_large", "eg_rejected", "unconvertible")
SOURCE_STATUSES = ("RUNNING", "ERROR", "CREATE_FAILED", "UNKNOWN")
# From 0.5 ms (emulator on loopback) to tens of seconds (a slow cloud under load).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The bridge's metrics. ``registry`` defaults to a fresh one, so tests and several
    bridges in one process never share counters."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_received = Counter(
            "eg_bridge_messages_received_total", "Broker messages received", registry=r)
        self.events_published = Counter(
            "eg_bridge_events_published_total", "Events EG accepted", registry=r)
        self.publish_failures = Counter(
            "eg_bridge_publish_failures_total", "Failed PutEvents requests by reason",
            ["reason"], registry=r)
        self.dead_lettered = Counter(
            "eg_bridge_dead_lettered_total", "Messages dead-lettered by reason", ["reason"],
            registry=r)
        self.redeliveries = Counter(
            "eg_bridge_redeliveries_total", "Messages the broker delivered again", registry=r)
        self.requeued = Counter(
            "eg_bridge_requeued_total", "Messages given back to the broker unsent", registry=r)
        self.stale_dropped = Counter(
            "eg_bridge_stale_dropped_total",
            "Unsent deliveries of a closed channel forgotten (the broker redelivers them)",
            registry=r)
        self.in_flight = Gauge(
            "eg_bridge_in_flight_messages", "Messages received and not yet settled", registry=r)
        self.publish_duration = Histogram(
            "eg_bridge_publish_duration_seconds", "PutEvents round trip", buckets=LATENCY_BUCKETS,
            registry=r)
        self.batch_size = Histogram(
            "eg_bridge_batch_size_events", "Events per PutEvents request",
            buckets=(1, 2, 5, 10, 15, 20), registry=r)
        self.consumer_connected = Gauge(
            "eg_bridge_consumer_connected", "1 while the broker consumer is attached", registry=r)
        self.source_status = Gauge(
            "eg_bridge_source_status", "1 for the EG source's current status", ["status"],
            registry=r)
        for reason in PUBLISH_FAILURE_REASONS:
            self.publish_failures.labels(reason)
        for reason in DEAD_LETTER_REASONS:
            self.dead_lettered.labels(reason)

    def set_source_status(self, status: str) -> None:
        """Mark ``status`` 1 and every other known status 0."""
        status = status if status in SOURCE_STATUSES else "UNKNOWN"
        for s in SOURCE_STATUSES:
            self.source_status.labels(s).set(1 if s == status else 0)

    def render(self) -> bytes:
        """Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
