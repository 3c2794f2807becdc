"""Settings: read from the environment in exactly one place, validated, frozen.

Every other module receives a :class:`Settings` as a parameter. Secrets are kept out
of ``repr`` so a settings object can be logged. ``ENV_VARS`` is the documented list
(the README table is generated from the same names).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final


class SettingsError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


class KafkaSetupError(RuntimeError):
    """Kafka refused what the settings say (credentials, TLS trust, ACLs): one line that
    names the setting or the ACL to fix, never a secret (raised by agents/kafka_io.py)."""


@dataclass(frozen=True, slots=True)
class Topics:
    pixel_raw: str = "events.pixel.raw"
    server_raw: str = "events.server.raw"
    catalog: str = "ads.catalog"
    conversions: str = "conversions.enriched"
    candidates: str = "conversions.attribution_candidates"
    dead_letter: str = "conversions.dead_letter"
    forward_dead_letter: str = "conversions.forward_dead_letter"


@dataclass(frozen=True, slots=True)
class Forward:
    """``convstream forward`` (SPEC §11). ``access_tokens`` is a secret: not in the repr."""

    graph_url: str = "https://graph.facebook.com"
    api_version: str = "v24.0"
    access_tokens: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    concurrency: int = 4
    timeout: float = 30.0
    linger: float = 1.0
    batch_size: int = 1000
    retry_base: float = 0.5
    retry_max: float = 60.0
    max_attempts: int = 0
    throttle_wait: float = 60.0
    pause_probe: float = 300.0
    max_waiting: int = 20_000

    @property
    def pixels(self) -> tuple[str, ...]:
        """The pixels a token is configured for (not secret)."""
        return tuple(sorted(p for p, _ in self.access_tokens))

    def token(self, pixel_id: str) -> str | None:
        return dict(self.access_tokens).get(pixel_id)


@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap_servers: str = "127.0.0.1:9092"
    app_id: str = "convstream"
    topics: Topics = field(default_factory=Topics)
    partitions: int = 8
    replication_factor: int = 1
    standby_replicas: int = 1  # warm copies of each table partition on other workers
    store: str = "rocksdb://"
    data_dir: str = "./convstream-data"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    log_level: str = "info"
    batch_size: int = 1000
    batch_within: float = 0.02
    ingest_process: str = "auto"  # ingest in a child process: auto (2+ CPUs) | yes | no
    compression: str = "zstd"  # record batches the worker produces: none|gzip|snappy|lz4|zstd
    dedup_window: int = 172_800
    dedup_sweep_interval: float = 60.0
    merge_window: int = 0
    dedup_lateness: float = 0.0  # seconds a dedup partition waits for earlier copies
    pixel_allowlist: frozenset[str] | None = None
    default_phone_country: str | None = None
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    forward: Forward = field(default_factory=Forward)
    # convstream collect (SPEC §12)
    collect_host: str = "127.0.0.1"
    collect_port: int = 8080
    collect_tokens: frozenset[tuple[str, str]] = field(default=frozenset(), repr=False)
    collect_trusted_proxies: tuple[str, ...] = ()
    collect_max_body: int = 1_048_576
    collect_ack_timeout: float = 10.0
    collect_max_pending: int = 20_000

    @property
    def ingest_own_process(self) -> bool:
        """Whether the worker runs ingest in a child process (a second core)."""
        if self.ingest_process == "auto":
            return usable_cpus() >= 2
        return self.ingest_process == "yes"

    @property
    def broker_url(self) -> str:
        """Faust broker URL(s): ``kafka://h1:p1;kafka://h2:p2``."""
        hosts = [h.strip() for h in self.bootstrap_servers.split(",") if h.strip()]
        return ";".join(h if "://" in h else f"kafka://{h}" for h in hosts)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (CLI flags override the environment)."""
        return replace(self, **changes)


# env var -> (attribute, parser); the one documented list of settings.
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
COMPRESSIONS: Final = ("none", "gzip", "snappy", "lz4", "zstd")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


ENV_VARS: dict[str, str] = {
    "KAFKA_BOOTSTRAP_SERVERS": "Kafka bootstrap servers, comma-separated host:port",
    "CONVSTREAM_APP_ID": "Faust app id = consumer group and prefix of internal topics",
    "CONVSTREAM_TOPIC_PIXEL_RAW": "input: raw browser hits",
    "CONVSTREAM_TOPIC_SERVER_RAW": "input: raw Conversions API bodies",
    "CONVSTREAM_TOPIC_CATALOG": "input: ad definitions (compacted)",
    "CONVSTREAM_TOPIC_CONVERSIONS": "output: conversions",
    "CONVSTREAM_TOPIC_CANDIDATES": "output: attribution candidates",
    "CONVSTREAM_TOPIC_DEAD_LETTER": "output: dead letters",
    "CONVSTREAM_TOPIC_FORWARD_DEAD_LETTER": "forward: events the Conversions API rejected",
    "CONVSTREAM_PARTITIONS": "partitions of the topics convstream creates",
    "CONVSTREAM_REPLICATION_FACTOR": "replication factor of the topics convstream creates",
    "CONVSTREAM_STANDBY_REPLICAS": "warm copies of each table partition kept by other workers",
    "CONVSTREAM_STORE": "table store: rocksdb:// (production) or memory:// (dev only)",
    "CONVSTREAM_DATA_DIR": "worker data directory (RocksDB state)",
    "CONVSTREAM_WEB_HOST": "bind address of /metrics, /healthz, /readyz",
    "CONVSTREAM_WEB_PORT": "port of /metrics, /healthz, /readyz",
    "CONVSTREAM_LOG_LEVEL": "debug, info, warning, error or critical",
    "CONVSTREAM_BATCH_SIZE": "max messages handled per batch",
    "CONVSTREAM_BATCH_WITHIN": "max seconds to wait to fill a batch",
    "CONVSTREAM_INGEST_PROCESS": "ingest in its own process: auto (with 2+ CPUs), yes or no",
    "CONVSTREAM_COMPRESSION": "codec of the worker's record batches: zstd, lz4, snappy, gzip, none",
    "CONVSTREAM_DEDUP_WINDOW": "dedup window in seconds (SPEC: 172800)",
    "CONVSTREAM_DEDUP_SWEEP_INTERVAL": "seconds between expiry sweeps of a partition's state",
    "CONVSTREAM_MERGE_WINDOW": "seconds a first copy is held for merging (0: emit at once)",
    "CONVSTREAM_DEDUP_LATENESS": "seconds dedup waits for copies received earlier (0: none)",
    "CONVSTREAM_PIXEL_ALLOWLIST": "comma-separated pixel ids; others are dead-lettered",
    "CONVSTREAM_DEFAULT_PHONE_COUNTRY": "ISO country whose calling code prefixes bare phones",
    "CONVSTREAM_CORE": "per-event core: auto, compiled (mypyc) or pure (read by streams/core.py)",
    "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
    "KAFKA_SASL_MECHANISM": "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "SASL user",
    "KAFKA_SASL_PASSWORD": "SASL password (never logged)",
    "KAFKA_SSL_CAFILE": "CA bundle for SSL / SASL_SSL",
    "CONVSTREAM_META_GRAPH_URL": "forward: Graph API base URL",
    "CONVSTREAM_META_API_VERSION": "forward: Graph API version, e.g. v24.0",
    "CONVSTREAM_META_ACCESS_TOKENS": "forward: pixel_id=token,pixel_id=token (secret)",
    "CONVSTREAM_META_ACCESS_TOKENS_FILE": "forward: file of pixel_id=token lines (secret)",
    "CONVSTREAM_FORWARD_CONCURRENCY": "forward: requests in flight at once",
    "CONVSTREAM_FORWARD_TIMEOUT": "forward: seconds before a request counts as timed out",
    "CONVSTREAM_FORWARD_LINGER": "forward: seconds a batch waits to fill before it is sent",
    "CONVSTREAM_FORWARD_BATCH_SIZE": "forward: max events per request (CAPI: 1000)",
    "CONVSTREAM_FORWARD_RETRY_BASE": "forward: first retry delay in seconds (doubles, jittered)",
    "CONVSTREAM_FORWARD_RETRY_MAX": "forward: longest retry delay in seconds",
    "CONVSTREAM_FORWARD_MAX_ATTEMPTS": "forward: attempts before dead-lettering (0: no limit)",
    "CONVSTREAM_FORWARD_THROTTLE_WAIT": "forward: wait when throttled without Retry-After",
    "CONVSTREAM_FORWARD_PAUSE_PROBE": "forward: seconds between probes of a paused pixel",
    "CONVSTREAM_FORWARD_MAX_WAITING": "forward: events held before consumption pauses",
    "CONVSTREAM_COLLECT_HOST": "collect: bind address of the HTTP collector",
    "CONVSTREAM_COLLECT_PORT": "collect: port of the HTTP collector",
    "CONVSTREAM_COLLECT_TOKENS": "collect: pixel_id=token,... for /{pixel_id}/events (secret)",
    "CONVSTREAM_COLLECT_TRUSTED_PROXIES": "collect: proxy IPs/CIDRs whose X-Forwarded-For counts",
    "CONVSTREAM_COLLECT_MAX_BODY": "collect: largest request body in bytes (413 above)",
    "CONVSTREAM_COLLECT_ACK_TIMEOUT": "collect: seconds to wait for Kafka's ack before a 503",
    "CONVSTREAM_COLLECT_MAX_PENDING": "collect: messages waiting for Kafka's ack before 503s",
}


def _int(name: str, raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(name: str, raw: str, lo: float, hi: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _choice(name: str, raw: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
    value = raw.strip().upper() if upper else raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOSTPORT_RE = re.compile(r"^(?:[a-z]+://)?[^\s:,]+:\d{1,5}$")


def _topic(name: str, raw: str) -> str:
    value = raw.strip()
    if not _TOPIC_RE.match(value) or value in (".", ".."):
        raise SettingsError(f"{name} is not a valid Kafka topic name: {raw!r}")
    return value


def _networks(name: str, raw: str) -> tuple[str, ...]:
    nets = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        try:
            nets.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise SettingsError(f"{name} holds {item!r}, not an address or CIDR") from None
    return tuple(nets)


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (default ``os.environ``); raise SettingsError naming the var."""
    env = os.environ if env is None else env
    unknown = sorted(k for k in env if k.startswith("CONVSTREAM_") and k not in ENV_VARS)
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]} (known: see README 'Settings')")

    def get(name: str) -> str | None:
        raw = env.get(name)
        return raw if raw is not None and raw.strip() != "" else None

    d = Settings()
    kw: dict[str, Any] = {}
    if (v := get("KAFKA_BOOTSTRAP_SERVERS")) is not None:
        hosts = [h.strip() for h in v.split(",") if h.strip()]
        bad = [h for h in hosts if not _HOSTPORT_RE.match(h)]
        if not hosts or bad:
            raise SettingsError(f"KAFKA_BOOTSTRAP_SERVERS must be host:port[,host:port], got {v!r}")
        kw["bootstrap_servers"] = ",".join(hosts)
    if (v := get("CONVSTREAM_APP_ID")) is not None:
        kw["app_id"] = _topic("CONVSTREAM_APP_ID", v)
    topic_kw = {}
    for f in fields(Topics):
        if (v := get(f"CONVSTREAM_TOPIC_{f.name.upper()}")) is not None:
            topic_kw[f.name] = _topic(f"CONVSTREAM_TOPIC_{f.name.upper()}", v)
    if topic_kw:
        topics = Topics(**topic_kw)
        names = [getattr(topics, f.name) for f in fields(Topics)]
        if len(set(names)) != len(names):
            raise SettingsError("CONVSTREAM_TOPIC_* names must all differ")
        kw["topics"] = topics
    if (v := get("CONVSTREAM_PARTITIONS")) is not None:
        kw["partitions"] = _int("CONVSTREAM_PARTITIONS", v, 1, 10_000)
    if (v := get("CONVSTREAM_REPLICATION_FACTOR")) is not None:
        kw["replication_factor"] = _int("CONVSTREAM_REPLICATION_FACTOR", v, 1, 32)
    if (v := get("CONVSTREAM_STANDBY_REPLICAS")) is not None:
        kw["standby_replicas"] = _int("CONVSTREAM_STANDBY_REPLICAS", v, 0, 8)
    if (v := get("CONVSTREAM_STORE")) is not None:
        v = v.strip()
        if not (v.startswith("rocksdb://") or v.startswith("memory://")):
            raise SettingsError(f"CONVSTREAM_STORE must be rocksdb:// or memory://, got {v!r}")
        kw["store"] = v
    if (v := get("CONVSTREAM_DATA_DIR")) is not None:
        kw["data_dir"] = v.strip()
    if (v := get("CONVSTREAM_WEB_HOST")) is not None:
        kw["web_host"] = v.strip()
    if (v := get("CONVSTREAM_WEB_PORT")) is not None:
        kw["web_port"] = _int("CONVSTREAM_WEB_PORT", v, 1, 65_535)
    if (v := get("CONVSTREAM_LOG_LEVEL")) is not None:
        kw["log_level"] = _choice("CONVSTREAM_LOG_LEVEL", v, _LOG_LEVELS)
    if (v := get("CONVSTREAM_BATCH_SIZE")) is not None:
        kw["batch_size"] = _int("CONVSTREAM_BATCH_SIZE", v, 1, 100_000)
    if (v := get("CONVSTREAM_BATCH_WITHIN")) is not None:
        kw["batch_within"] = _float("CONVSTREAM_BATCH_WITHIN", v, 0.001, 60.0)
    if (v := get("CONVSTREAM_INGEST_PROCESS")) is not None:
        kw["ingest_process"] = _choice("CONVSTREAM_INGEST_PROCESS", v, ("auto", "yes", "no"))
    if (v := get("CONVSTREAM_COMPRESSION")) is not None:
        kw["compression"] = _choice("CONVSTREAM_COMPRESSION", v, COMPRESSIONS)
    if (v := get("CONVSTREAM_DEDUP_WINDOW")) is not None:
        kw["dedup_window"] = _int("CONVSTREAM_DEDUP_WINDOW", v, 1, 30 * 86_400)
    if (v := get("CONVSTREAM_DEDUP_SWEEP_INTERVAL")) is not None:
        kw["dedup_sweep_interval"] = _float("CONVSTREAM_DEDUP_SWEEP_INTERVAL", v, 0.0, 86_400.0)
    if (v := get("CONVSTREAM_MERGE_WINDOW")) is not None:
        kw["merge_window"] = _int("CONVSTREAM_MERGE_WINDOW", v, 0, 86_400)
    if (v := get("CONVSTREAM_DEDUP_LATENESS")) is not None:
        kw["dedup_lateness"] = _float("CONVSTREAM_DEDUP_LATENESS", v, 0.0, 3600.0)
    if (v := get("CONVSTREAM_PIXEL_ALLOWLIST")) is not None:
        ids = frozenset(p.strip() for p in v.split(",") if p.strip())
        bad = sorted(p for p in ids if not (p.isascii() and p.isdigit() and len(p) <= 20))
        if bad:
            raise SettingsError(f"CONVSTREAM_PIXEL_ALLOWLIST holds a non-pixel id: {bad[0]!r}")
        kw["pixel_allowlist"] = ids
    if (v := get("CONVSTREAM_DEFAULT_PHONE_COUNTRY")) is not None:
        code = v.strip().upper()
        if not (len(code) == 2 and code.isascii() and code.isalpha()):
            raise SettingsError(
                f"CONVSTREAM_DEFAULT_PHONE_COUNTRY must be an ISO 3166 alpha-2 code, got {v!r}"
            )
        kw["default_phone_country"] = code
    if (v := get("KAFKA_SECURITY_PROTOCOL")) is not None:
        kw["security_protocol"] = _choice("KAFKA_SECURITY_PROTOCOL", v, _PROTOCOLS, upper=True)
    if (v := get("KAFKA_SASL_MECHANISM")) is not None:
        kw["sasl_mechanism"] = _choice("KAFKA_SASL_MECHANISM", v, _SASL, upper=True)
    for name, attr in (
        ("KAFKA_SASL_USERNAME", "sasl_username"),
        ("KAFKA_SASL_PASSWORD", "sasl_password"),
        ("KAFKA_SSL_CAFILE", "ssl_cafile"),
    ):
        if (v := get(name)) is not None:
            kw[attr] = v
    fw = _forward(env, get)
    if fw is not None:
        kw["forward"] = fw
    if (v := get("CONVSTREAM_COLLECT_HOST")) is not None:
        kw["collect_host"] = v.strip()
    if (v := get("CONVSTREAM_COLLECT_PORT")) is not None:
        kw["collect_port"] = _int("CONVSTREAM_COLLECT_PORT", v, 1, 65_535)
    if (v := get("CONVSTREAM_COLLECT_TOKENS")) is not None:
        kw["collect_tokens"] = frozenset(
            _tokens("CONVSTREAM_COLLECT_TOKENS", v.split(","), several=True)
        )
    if (v := get("CONVSTREAM_COLLECT_TRUSTED_PROXIES")) is not None:
        kw["collect_trusted_proxies"] = _networks("CONVSTREAM_COLLECT_TRUSTED_PROXIES", v)
    if (v := get("CONVSTREAM_COLLECT_MAX_BODY")) is not None:
        kw["collect_max_body"] = _int("CONVSTREAM_COLLECT_MAX_BODY", v, 1024, 512 * 1024 * 1024)
    if (v := get("CONVSTREAM_COLLECT_ACK_TIMEOUT")) is not None:
        kw["collect_ack_timeout"] = _float("CONVSTREAM_COLLECT_ACK_TIMEOUT", v, 0.1, 600.0)
    if (v := get("CONVSTREAM_COLLECT_MAX_PENDING")) is not None:
        kw["collect_max_pending"] = _int("CONVSTREAM_COLLECT_MAX_PENDING", v, 1, 10_000_000)
    s = replace(d, **kw)
    if s.ssl_cafile is not None and not os.path.isfile(s.ssl_cafile):
        raise SettingsError(f"KAFKA_SSL_CAFILE is not a readable file: {s.ssl_cafile!r}")
    if s.security_protocol.startswith("SASL") and not (s.sasl_username and s.sasl_password):
        raise SettingsError(
            "KAFKA_SECURITY_PROTOCOL=SASL_* needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
        )
    if s.security_protocol.startswith("SASL") and s.sasl_mechanism is None:
        s = replace(s, sasl_mechanism="PLAIN")
    return s


_VERSION_RE = re.compile(r"^v[0-9]{1,3}\.[0-9]{1,3}$")
_PIXEL_RE = re.compile(r"^[0-9]{1,20}$")


def _tokens(name: str, items: Iterable[str], *, several: bool) -> list[tuple[str, str]]:
    """``pixel_id=token`` items (blank ones skipped) as (pixel, token) pairs; ``several``:
    a pixel may have several tokens (collect: during rotation), else one (forward sends
    with it). Errors name the pixel or the item number, never a token."""
    pairs: list[tuple[str, str]] = []
    for n, item in enumerate(items, 1):
        if not item.strip():
            continue
        pixel, sep, token = item.partition("=")
        pixel, token = pixel.strip(), token.strip()
        if not sep or not _PIXEL_RE.match(pixel):
            raise SettingsError(f"{name}: item {n} is not pixel_id=token (pixel id: 1-20 digits)")
        if not token or any(c.isspace() or c == "," for c in token):
            raise SettingsError(f"{name}: the token of pixel {pixel} is empty or holds spaces")
        if not several and any(p == pixel for p, _ in pairs):
            raise SettingsError(f"{name}: pixel {pixel} is given twice")
        pairs.append((pixel, token))
    return pairs


def _forward(env: Mapping[str, str], get: Any) -> Forward | None:
    """The ``CONVSTREAM_META_*`` and ``CONVSTREAM_FORWARD_*`` settings (None: all default)."""
    kw: dict[str, Any] = {}
    if (v := get("CONVSTREAM_META_GRAPH_URL")) is not None:
        url = v.strip().rstrip("/")
        if not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", url):
            raise SettingsError(f"CONVSTREAM_META_GRAPH_URL must be an http(s) URL, got {v!r}")
        kw["graph_url"] = url
    if (v := get("CONVSTREAM_META_API_VERSION")) is not None:
        if not _VERSION_RE.match(v.strip()):
            raise SettingsError(f"CONVSTREAM_META_API_VERSION must look like v24.0, got {v!r}")
        kw["api_version"] = v.strip()
    inline, path = get("CONVSTREAM_META_ACCESS_TOKENS"), get("CONVSTREAM_META_ACCESS_TOKENS_FILE")
    if inline is not None and path is not None:
        raise SettingsError(
            "give CONVSTREAM_META_ACCESS_TOKENS or CONVSTREAM_META_ACCESS_TOKENS_FILE, not both"
        )
    if inline is not None:
        tokens = _tokens("CONVSTREAM_META_ACCESS_TOKENS", inline.split(","), several=False)
        kw["access_tokens"] = tuple(sorted(tokens))
    if path is not None:
        try:
            text = open(path.strip(), encoding="utf-8").read()  # noqa: SIM115
        except OSError as e:
            raise SettingsError(
                f"CONVSTREAM_META_ACCESS_TOKENS_FILE: cannot read {path.strip()}: {e.strerror}"
            ) from None
        items = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        tokens = _tokens("CONVSTREAM_META_ACCESS_TOKENS_FILE", items, several=False)
        kw["access_tokens"] = tuple(sorted(tokens))
    numbers: tuple[tuple[str, str, type, float, float], ...] = (
        ("CONVSTREAM_FORWARD_CONCURRENCY", "concurrency", int, 1, 256),
        ("CONVSTREAM_FORWARD_TIMEOUT", "timeout", float, 0.1, 600.0),
        ("CONVSTREAM_FORWARD_LINGER", "linger", float, 0.0, 60.0),
        ("CONVSTREAM_FORWARD_BATCH_SIZE", "batch_size", int, 1, 1000),
        ("CONVSTREAM_FORWARD_RETRY_BASE", "retry_base", float, 0.001, 600.0),
        ("CONVSTREAM_FORWARD_RETRY_MAX", "retry_max", float, 0.001, 86_400.0),
        ("CONVSTREAM_FORWARD_MAX_ATTEMPTS", "max_attempts", int, 0, 1_000_000),
        ("CONVSTREAM_FORWARD_THROTTLE_WAIT", "throttle_wait", float, 0.001, 86_400.0),
        ("CONVSTREAM_FORWARD_PAUSE_PROBE", "pause_probe", float, 0.1, 86_400.0),
        ("CONVSTREAM_FORWARD_MAX_WAITING", "max_waiting", int, 1000, 10_000_000),
    )
    for name, attr, typ, lo, hi in numbers:
        if (v := get(name)) is not None:
            kw[attr] = _int(name, v, int(lo), int(hi)) if typ is int else _float(name, v, lo, hi)
    if not kw:
        return None
    fw = Forward(**kw)
    if fw.retry_max < fw.retry_base:
        raise SettingsError("CONVSTREAM_FORWARD_RETRY_MAX must be >= CONVSTREAM_FORWARD_RETRY_BASE")
    return fw


def to_env(s: Settings) -> dict[str, str]:
    """The environment that makes ``from_env`` return ``s`` (for child processes)."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": s.bootstrap_servers,
        "CONVSTREAM_APP_ID": s.app_id,
        "CONVSTREAM_PARTITIONS": str(s.partitions),
        "CONVSTREAM_REPLICATION_FACTOR": str(s.replication_factor),
        "CONVSTREAM_STANDBY_REPLICAS": str(s.standby_replicas),
        "CONVSTREAM_STORE": s.store,
        "CONVSTREAM_DATA_DIR": s.data_dir,
        "CONVSTREAM_WEB_HOST": s.web_host,
        "CONVSTREAM_WEB_PORT": str(s.web_port),
        "CONVSTREAM_LOG_LEVEL": s.log_level,
        "CONVSTREAM_BATCH_SIZE": str(s.batch_size),
        "CONVSTREAM_BATCH_WITHIN": repr(s.batch_within),
        "CONVSTREAM_INGEST_PROCESS": s.ingest_process,
        "CONVSTREAM_COMPRESSION": s.compression,
        "CONVSTREAM_DEDUP_WINDOW": str(s.dedup_window),
        "CONVSTREAM_DEDUP_SWEEP_INTERVAL": repr(s.dedup_sweep_interval),
        "CONVSTREAM_MERGE_WINDOW": str(s.merge_window),
        "CONVSTREAM_DEDUP_LATENESS": repr(s.dedup_lateness),
        "KAFKA_SECURITY_PROTOCOL": s.security_protocol,
        "CONVSTREAM_COLLECT_HOST": s.collect_host,
        "CONVSTREAM_COLLECT_PORT": str(s.collect_port),
        "CONVSTREAM_COLLECT_MAX_BODY": str(s.collect_max_body),
        "CONVSTREAM_COLLECT_ACK_TIMEOUT": repr(s.collect_ack_timeout),
        "CONVSTREAM_COLLECT_MAX_PENDING": str(s.collect_max_pending),
    }
    if s.collect_tokens:
        env["CONVSTREAM_COLLECT_TOKENS"] = ",".join(f"{p}={t}" for p, t in sorted(s.collect_tokens))
    if s.collect_trusted_proxies:
        env["CONVSTREAM_COLLECT_TRUSTED_PROXIES"] = ",".join(s.collect_trusted_proxies)
    for f in fields(Topics):
        env[f"CONVSTREAM_TOPIC_{f.name.upper()}"] = getattr(s.topics, f.name)
    if s.pixel_allowlist is not None:
        env["CONVSTREAM_PIXEL_ALLOWLIST"] = ",".join(sorted(s.pixel_allowlist))
    optional = {
        "CONVSTREAM_DEFAULT_PHONE_COUNTRY": s.default_phone_country,
        "KAFKA_SASL_MECHANISM": s.sasl_mechanism,
        "KAFKA_SASL_USERNAME": s.sasl_username,
        "KAFKA_SASL_PASSWORD": s.sasl_password,
        "KAFKA_SSL_CAFILE": s.ssl_cafile,
    }
    env.update({k: v for k, v in optional.items() if v is not None})
    fw = s.forward
    env.update(
        {
            "CONVSTREAM_META_GRAPH_URL": fw.graph_url,
            "CONVSTREAM_META_API_VERSION": fw.api_version,
            "CONVSTREAM_FORWARD_CONCURRENCY": str(fw.concurrency),
            "CONVSTREAM_FORWARD_TIMEOUT": repr(fw.timeout),
            "CONVSTREAM_FORWARD_LINGER": repr(fw.linger),
            "CONVSTREAM_FORWARD_BATCH_SIZE": str(fw.batch_size),
            "CONVSTREAM_FORWARD_RETRY_BASE": repr(fw.retry_base),
            "CONVSTREAM_FORWARD_RETRY_MAX": repr(fw.retry_max),
            "CONVSTREAM_FORWARD_MAX_ATTEMPTS": str(fw.max_attempts),
            "CONVSTREAM_FORWARD_THROTTLE_WAIT": repr(fw.throttle_wait),
            "CONVSTREAM_FORWARD_PAUSE_PROBE": repr(fw.pause_probe),
            "CONVSTREAM_FORWARD_MAX_WAITING": str(fw.max_waiting),
        }
    )
    if fw.access_tokens:
        env["CONVSTREAM_META_ACCESS_TOKENS"] = ",".join(f"{p}={t}" for p, t in fw.access_tokens)
    return env
