"""Prometheus metrics: what the fleet and the worker are doing, by Prometheus conventions
(base units, ``_total`` counters, no ICCID labels: a million SIMs would be a million
series). Served on /metrics by every worker, together with Faust's own sensor metrics
(prefix ``faust_``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ALERT_KINDS = (
    "quota_threshold",
    "quota_forecast",
    "expiry_upcoming",
    "grace_ending",
    "request_rejected",
    "unknown_sim",
    "late_usage",
    "pool_threshold",
    "pool_forecast",
    "unknown_pool",
    "command_failed",
    "status_drift",
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FRESHNESS_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0)


class Metrics:
    """Every metric of stream-app, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.input_messages = Counter(
            "stream_app_input_messages",
            "Input messages by topic and outcome "
            "(accepted, duplicate, late, unknown_sim, stale, refused, cancelled, rejected, invalid, error)",
            ["topic", "outcome"],
            registry=registry,
        )
        self.usage_bytes = Counter(
            "stream_app_usage_bytes",
            "Usage bytes counted (duplicates and refused records excluded)",
            registry=registry,
        )
        self.commands = Counter(
            "stream_app_commands",
            "Commands sent, by action, reason and trigger",
            ["action", "reason", "trigger"],
            registry=registry,
        )
        self.alerts = Counter("stream_app_alerts", "Alerts sent, by kind", ["kind"], registry=registry)
        for kind in ALERT_KINDS:  # at 0 from the start: a dashboard's rate has a series to show
            self.alerts.labels(kind)
        self.charges = Counter("stream_app_charges", "Charges sent, by kind", ["kind"], registry=registry)
        self.dead_letters = Counter(
            "stream_app_dead_letters",
            "Messages sent to the dead-letter topic, by topic and error",
            ["topic", "error"],
            registry=registry,
        )
        self.sims = Gauge(
            "stream_app_sims",
            "SIMs in the partitions this worker owns, by status",
            ["status"],
            registry=registry,
        )
        self.suspended_sims = Gauge(
            "stream_app_suspended_sims",
            "Suspended SIMs in the partitions this worker owns, by reason",
            ["reason"],
            registry=registry,
        )
        self.throttled_sims = Gauge(
            "stream_app_throttled_sims",
            "SIMs slowed down at their quota (on_quota throttle) in the partitions this worker owns",
            registry=registry,
        )
        self.addons = Counter(
            "stream_app_addons", "Add-on packs counted (each addon_id once per SIM)", registry=registry
        )
        self.pools = Gauge(
            "stream_app_pools",
            "Pools (流量池) in the partitions this worker owns, by state: ok, exhausted, unknown",
            ["state"],
            registry=registry,
        )
        self.pending_commands = Gauge(
            "stream_app_pending_commands",
            "SIMs with a command waiting for its result (acknowledgement tracking), by dimension",
            ["dimension"],
            registry=registry,
        )
        self.command_resends = Counter(
            "stream_app_command_resends",
            "Commands sent again (attempt > 1) for want of an applied result",
            registry=registry,
        )
        self.command_results = Counter(
            "stream_app_command_results",
            "Command results received, by outcome (applied, failed, rejected)",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("applied", "failed", "rejected"):
            self.command_results.labels(outcome)
        self.decision_latency = Histogram(
            "stream_app_decision_latency_seconds",
            "From an input's Kafka timestamp to its outputs sent",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.freshness = Histogram(
            "stream_app_data_freshness_seconds",
            "Now minus a usage record's end, when it is processed",
            buckets=FRESHNESS_BUCKETS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "stream_app_consumer_lag_messages",
            "End offset minus committed offset, per owned partition",
            ["topic", "partition"],
            registry=registry,
        )
        self.sweep_timestamp = Gauge(
            "stream_app_last_sweep_timestamp_seconds",
            "Wall time of the last tick sweep that rolled SIMs forward (month starts, expiries)",
            registry=registry,
        )
        self.sweep_duration = Gauge(
            "stream_app_last_sweep_duration_seconds", "Duration of that sweep", registry=registry
        )
        self.swept_sims = Counter(
            "stream_app_swept_sims", "SIMs rolled forward by tick sweeps", registry=registry
        )
        self.read_back = Counter(
            "stream_app_read_back_messages",
            "Input messages read from the broker by the worker itself: Faust fetched them and"
            " never delivered them in order (docs/reliability.md)",
            ["topic"],
            registry=registry,
        )
        self.stuck_partitions = Gauge(
            "stream_app_stuck_partitions",
            "Input partitions whose commits stopped at a write never acknowledged (until a rebalance)",
            registry=registry,
        )
        self.owned_partitions = Gauge(
            "stream_app_owned_partitions", "Input partitions this worker actively owns", registry=registry
        )
        # What stops input at the door (worker/fetching.py); both are set from callbacks.
        self.held_partitions = Gauge(
            "stream_app_held_partitions",
            "Input partitions held at a record batch the worker cannot decode (corrupt, or a codec"
            " it has no library for); the log and /readyz name topic, partition and offset",
            registry=registry,
        )
        self.kafka_answered = Gauge(
            "stream_app_kafka_answered_timestamp_seconds",
            "Wall time Kafka last answered the worker's fetches; /readyz answers 503 once this is"
            " older than STREAM_APP_BROKER_LOST_AFTER",
            registry=registry,
        )
