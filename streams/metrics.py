"""Every Prometheus metric, declared once, with fixed and bounded label sets.

Labels never carry pixel ids, event ids or PII. ``event_name`` is bounded by
:func:`event_label` (Meta's standard events, everything else is ``custom``).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from streams import __version__

disable_created_metrics()  # type: ignore[no-untyped-call] # no *_created series: they double the scrape for no use
REGISTRY: Final = CollectorRegistry(auto_describe=True)

STANDARD_EVENTS: Final = frozenset(
    {
        "AddPaymentInfo",
        "AddToCart",
        "AddToWishlist",
        "CompleteRegistration",
        "Contact",
        "CustomizeProduct",
        "Donate",
        "FindLocation",
        "InitiateCheckout",
        "Lead",
        "PageView",
        "Purchase",
        "Schedule",
        "Search",
        "StartTrial",
        "SubmitApplication",
        "Subscribe",
        "ViewContent",
    }
)


def event_label(event_name: object) -> str:
    """Bounded metric label for an event name."""
    return event_name if isinstance(event_name, str) and event_name in STANDARD_EVENTS else "custom"


BUILD_INFO: Final = Info("convstream_build", "convstream version", registry=REGISTRY)
BUILD_INFO.info({"version": __version__})

MESSAGES_IN: Final = Counter(
    "convstream_messages_in", "Raw Kafka messages read", ["source"], registry=REGISTRY
)
EVENTS_IN: Final = Counter(
    "convstream_events_in",
    "Events read (a server message holds up to 1000)",
    ["source"],
    registry=REGISTRY,
)
VALID_EVENTS: Final = Counter(
    "convstream_valid_events",
    "Events that passed validation (before dedup)",
    ["source", "event_name"],
    registry=REGISTRY,
)
CONVERSIONS_OUT: Final = Counter(
    "convstream_conversions_out",
    "Conversions written to the conversions topic",
    ["source", "event_name"],
    registry=REGISTRY,
)
DEAD_LETTERS: Final = Counter(
    "convstream_dead_letters",
    "Dead letters written, by first error code",
    ["source", "code"],
    registry=REGISTRY,
)
ERRORS: Final = Counter(
    "convstream_errors",
    "Validation errors found (a dead letter can carry several)",
    ["code"],
    registry=REGISTRY,
)
WARNINGS: Final = Counter(
    "convstream_warnings", "Warnings attached to conversions", ["code"], registry=REGISTRY
)
PII_VALUES: Final = Counter(
    "convstream_pii_values",
    "user_data values by key and outcome (hashed, prehashed, dropped)",
    ["key", "outcome"],
    registry=REGISTRY,
)
NON_CONVERSIONS: Final = Counter(
    "convstream_non_conversions",
    "Hits counted but never emitted (Microdata, automatic)",
    ["source", "reason"],
    registry=REGISTRY,
)
DUPLICATES: Final = Counter(
    "convstream_duplicates",
    "Copies dropped as duplicates, by rule and source pair (kept>duplicate)",
    ["method", "pair"],
    registry=REGISTRY,
)
KEPT: Final = Counter(
    "convstream_dedup_kept",
    "Conversions kept by dedup, by key (event_id, or none: fallback only)",
    ["method"],
    registry=REGISTRY,
)
MERGES: Final = Counter(
    "convstream_dedup_merges", "Duplicates merged into a held conversion", registry=REGISTRY
)
REPLAYS: Final = Counter(
    "convstream_dedup_replays",
    "A kept event seen again after a restart (already emitted; not a duplicate)",
    registry=REGISTRY,
)
LATE_DUPLICATES: Final = Counter(
    "convstream_dedup_late_duplicates",
    "Copies of a key whose dedup window had ended: kept again",
    registry=REGISTRY,
)
OUT_OF_ORDER: Final = Counter(
    "convstream_dedup_out_of_order",
    "Events that reached the dedup stage after a later-received event of their partition "
    "(decided as they came: SPEC §6 order holds per ingest consumer, README Dedup design)",
    registry=REGISTRY,
)
DEDUP_BUFFERED: Final = Gauge(
    "convstream_dedup_buffered",
    "Events waiting in the dedup stage's reorder buffers (CONVSTREAM_DEDUP_LATENESS)",
    registry=REGISTRY,
)
EXPIRED: Final = Counter(
    "convstream_dedup_expired_keys",
    "Dedup state keys deleted because their window ended",
    registry=REGISTRY,
)
HELD: Final = Gauge(
    "convstream_dedup_held", "Conversions held for the merge window", registry=REGISTRY
)
CANDIDATES: Final = Counter(
    "convstream_attribution_candidates",
    "Attribution candidates by click window",
    ["window"],
    registry=REGISTRY,
)
CANDIDATES_OUT_OF_WINDOW: Final = Counter(
    "convstream_attribution_out_of_window",
    "Clicks with no candidate: click after the conversion (negative) or > 28 days before",
    ["reason"],
    registry=REGISTRY,
)
CLICK_EVIDENCE: Final = Counter(
    "convstream_attribution_conversions",
    "Conversions read by attribution, with or without click evidence (fbc / fbclid)",
    ["evidence"],
    registry=REGISTRY,
)
LANDING_STORED: Final = Counter(
    "convstream_attribution_landing_stored",
    "Landing hits stored (first hit of an fbclid, or an earlier one replacing it)",
    registry=REGISTRY,
)
LANDING_EXPIRED: Final = Counter(
    "convstream_attribution_landing_expired",
    "Landing entries deleted after 28 days",
    registry=REGISTRY,
)
SPEC_LOOKUPS: Final = Counter(
    "convstream_attribution_spec_lookups",
    "Candidates by ad lookup: known (in ads.catalog), unknown_ad, no_ad_id",
    ["result"],
    registry=REGISTRY,
)
SPEC_MATCHES: Final = Counter(
    "convstream_attribution_spec_matches",
    "Candidates whose ad's tracking specs (any) or conversion spec matched",
    ["spec"],
    registry=REGISTRY,
)
LANDING_KEYS: Final = Gauge(
    "convstream_attribution_landing_keys",
    "Live landing entries held by this worker",
    registry=REGISTRY,
)
CATALOG_ADS: Final = Gauge(
    "convstream_catalog_ads", "Ads held from ads.catalog (global: every worker)", registry=REGISTRY
)
CATALOG_REJECTED: Final = Counter(
    "convstream_catalog_rejected",
    "ads.catalog records rejected as malformed (dead-lettered, code invalid_ad)",
    registry=REGISTRY,
)
DEDUP_KEYS: Final = Gauge(
    "convstream_dedup_keys", "Live dedup keys held by this worker", registry=REGISTRY
)
INPUT_SKIPPED: Final = Counter(
    "convstream_input_skipped",
    "Records a stateful stage did not process: done = below its progress (delivered again "
    "after a restart or rebalance), ahead = beyond it (earlier records were skipped by "
    "the stream; read again after a seek)",
    ["stage", "verdict"],
    registry=REGISTRY,
)
INPUT_SEEKS: Final = Counter(
    "convstream_input_seeks",
    "Seeks of a stateful stage back to its progress, after its stream skipped records",
    ["stage"],
    registry=REGISTRY,
)
INPUT_LOST: Final = Counter(
    "convstream_input_lost",
    "Records deleted by retention before a stateful stage processed them",
    ["stage"],
    registry=REGISTRY,
)
BATCH_SECONDS: Final = Histogram(
    "convstream_batch_duration_seconds",
    "Time to process one batch of messages, by stage",
    ["stage"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
BATCH_SIZE: Final = Histogram(
    "convstream_batch_size",
    "Messages per processed batch",
    ["stage"],
    registry=REGISTRY,
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)

# --- convstream forward (SPEC §11) --------------------------------------------------------
# The one label that names a pixel: FORWARD_PIXEL_STATE, and only for the pixels an access
# token is configured for (bounded by the configuration; pixel ids are not personal data).
FORWARD_EVENTS_SENT: Final = Counter(
    "convstream_forward_events_sent",
    "Events the Conversions API accepted",
    ["event_name"],
    registry=REGISTRY,
)
FORWARD_EVENTS_REJECTED: Final = Counter(
    "convstream_forward_events_rejected",
    "Events dead-lettered by forward: rejected (by Meta), no_access_token, invalid_record, "
    "retries_exhausted",
    ["reason"],
    registry=REGISTRY,
)
FORWARD_EVENTS_RETRIED: Final = Counter(
    "convstream_forward_events_retried",
    "Events sent again, by reason (timeout, transport, http_5xx, graph_transient, "
    "not_graph_error, throttled, paused)",
    ["reason"],
    registry=REGISTRY,
)
FORWARD_REQUESTS: Final = Counter(
    "convstream_forward_requests",
    "Graph API requests by outcome: ok, retry, throttle, reject, auth",
    ["outcome"],
    registry=REGISTRY,
)
FORWARD_SPLITS: Final = Counter(
    "convstream_forward_splits",
    "Rejected batches split in two to isolate the events Meta rejects",
    registry=REGISTRY,
)
FORWARD_REQUEST_SECONDS: Final = Histogram(
    "convstream_forward_request_duration_seconds",
    "Graph API request latency (answered or failed)",
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
FORWARD_EVENTS_WAITING: Final = Gauge(
    "convstream_forward_events_waiting",
    "Events read and not yet settled (sent or dead-lettered)",
    registry=REGISTRY,
)
FORWARD_LAG: Final = Gauge(
    "convstream_forward_lag",
    "Records of the conversions topic after the forwarder's committed offsets (its partitions)",
    registry=REGISTRY,
)
FORWARD_PIXEL_STATE: Final = Gauge(
    "convstream_forward_pixel_state",
    "1 for the state each configured pixel is in: active, throttled, paused (bad token)",
    ["pixel_id", "state"],
    registry=REGISTRY,
)
PIXEL_STATES: Final = ("active", "throttled", "paused")
# --- convstream collect (SPEC §12): its own registry, served on the collector's port ---
COLLECT_REGISTRY: Final = CollectorRegistry(auto_describe=True)
COLLECT_BUILD_INFO: Final = Info(
    "convstream_build", "convstream version", registry=COLLECT_REGISTRY
)
COLLECT_BUILD_INFO.info({"version": __version__})
COLLECT_REQUESTS: Final = Counter(
    "convstream_collect_requests",
    "HTTP requests answered by the collector, by endpoint and status class",
    ["endpoint", "status"],
    registry=COLLECT_REGISTRY,
)
COLLECT_REJECTED: Final = Counter(
    "convstream_collect_rejected",
    "Requests refused, by reason (bad_token, too_large, too_many_events, malformed, empty, "
    "bad_data, not_found, method, kafka_unavailable, kafka_timeout, backpressure)",
    ["endpoint", "reason"],
    registry=COLLECT_REGISTRY,
)
COLLECT_MESSAGES: Final = Counter(
    "convstream_collect_messages",
    "Messages acknowledged by Kafka (then answered 2xx), by raw topic",
    ["source"],
    registry=COLLECT_REGISTRY,
)
COLLECT_EVENTS: Final = Counter(
    "convstream_collect_events",
    "CAPI events in acknowledged server messages",
    registry=COLLECT_REGISTRY,
)
COLLECT_PRIVACY_SANDBOX: Final = Counter(
    "convstream_collect_privacy_sandbox_hits",
    "Browser second copies to /privacy_sandbox/pixel/register/trigger/ (counted, not written)",
    registry=COLLECT_REGISTRY,
)
COLLECT_PENDING: Final = Gauge(
    "convstream_collect_pending",
    "Messages handed to the producer and not yet acknowledged",
    registry=COLLECT_REGISTRY,
)
COLLECT_KAFKA_UP: Final = Gauge(
    "convstream_collect_kafka_up",
    "1 when the producer is connected and its last send was acknowledged",
    registry=COLLECT_REGISTRY,
)
COLLECT_SECONDS: Final = Histogram(
    "convstream_collect_request_duration_seconds",
    "Time from request to answer (includes waiting for Kafka's ack), by endpoint",
    ["endpoint"],
    registry=COLLECT_REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
