"""The Grafana dashboard and the alert rules, evaluated by a real Prometheus.

A Prometheus (the `prometheus` binary, `make prometheus`) scrapes a live worker, the
collector and the forwarder every second while the sample traffic of `convstream demo`
flows through them twice, with deploy/prometheus/alerts.yml as its rule file. Then every
panel query of deploy/grafana/dashboards/convstream.json and every alert expression is
evaluated through /api/v1/query: each must return exactly the series listed below (by
label set, with finite values, positive where traffic moved them), or be listed as
expected empty with the reason. No query may error and no rule may be unhealthy.

Three failures are staged so that alerts have something to find: a scrape target of the
`convstream` job where nothing listens (a worker down), malformed server messages
produced straight to Kafka (dead letters of the kind the collector refuses at the door),
and one Purchase per round that Meta rejects (a forward dead letter)."""

from __future__ import annotations

import functools
import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from streams import __version__, replay
from streams.cli import send_requests
from streams.settings import Forward, Settings
from tests.graph_endpoint import GraphEndpoint
from tests.integration.collect_helpers import (
    PIXEL,
    TOKEN,
    CollectorProc,
    collector_settings,
)
from tests.integration.conftest import REPO, WorkerProc, all_topics, free_port, http_get

pytestmark = pytest.mark.integration

EXAMPLES = REPO / "schemas" / "examples"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "convstream.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
META_TOKEN = "EAAtokenLive0123456789"
# Grafana's variables: `Worker` = All (its allValue), and $__rate_interval a window that
# spans the whole run (Grafana takes max(4 x scrape interval, $__interval + scrape
# interval); at a 1 s scrape that is 4 s, shorter than the pause between the rounds).
RATE_INTERVAL = "1m"
# Two rounds of traffic: a counter series first scraped at its final value has a rate of
# 0 (Prometheus has no earlier sample of it), so a second round gives every series an
# increase. Round 2 is the same traffic with other ids, new to dedup and attribution.
ROUND2 = {
    b"order-": b"order-r2-",
    b"cart-7": b"cart-r2-7",
    b"vc-9": b"vc-r2-9",
    b"crm-42": b"crm-r2-42",
    b"525645896321548": b"525645896321549",
    b".123456": b".223456",
    b".987654": b".887654",
    b"IwAR2xYzAbC": b"IwAR2xYzAbD",
    b"IwAR9LandingClick": b"IwAR9LandingClicj",
}
REJECTED = frozenset({"order-1001", "order-r2-1001"})  # Meta rejects these (code 100)
# malformed server messages produced to Kafka in round 1, round 2: the series exists after
# round 1, so increase() sees round 2's 11 (ConvstreamDeadLetterRatioHigh needs >= 10)
MALFORMED = (1, 11)


def positive(v: float) -> bool:
    """> 0"""
    return v > 0


def zero(v: float) -> bool:
    """== 0"""
    return v == 0


def nonnegative(v: float) -> bool:
    """>= 0"""
    return v >= 0


def share(v: float) -> bool:
    """a share in (0, 1]"""
    return 0 < v <= 1


def ratio_or_zero(v: float) -> bool:
    """a share in [0, 1]"""
    return 0 <= v <= 1


def one(v: float) -> bool:
    """== 1"""
    return v == 1


def three(v: float) -> bool:
    """== 3"""
    return v == 3


NONE: dict[str, str] = {}
SOURCES = ({"source": "browser"}, {"source": "server"})
STAGES = tuple({"stage": s} for s in ("ingest", "dedup", "attribution"))
PII_KEYS = ("country", "ct", "db", "em", "external_id", "fn", "ge", "ln", "ph", "st", "zp")
# what the sample traffic (twice) and the staged failures give: query -> (series, check).
# Label values are formatted with the scrape targets ({worker}, {forward}, {collect},
# {dead}).
EXPECTED: dict[str, tuple[tuple[dict[str, str], ...], Callable[[float], bool]]] = {
    "Workers up / A": ((NONE,), one),  # of two targets: one is down
    "Events in / A": ((NONE,), positive),
    "Conversions out / A": ((NONE,), positive),
    "Dead-letter ratio / A": ((NONE,), share),
    "Dedup keys / A": ((NONE,), positive),
    "Version / A": (({"version": __version__},), three),  # worker, forwarder, collector
    "Input by source / A": (SOURCES, positive),
    "Input by source / B": (SOURCES, positive),
    "Conversions out by event name / A": (
        tuple(
            {"event_name": e} for e in ("AddToCart", "Lead", "PageView", "Purchase", "ViewContent")
        ),
        positive,
    ),
    "Dead letters by code / A": (
        (
            {"source": "server", "code": "malformed_message"},
            {"source": "server", "code": "missing_currency"},
        ),
        positive,
    ),
    # browser has no dead letter: its ratio is 0, not a missing line
    "Dead-letter ratio by source / A": (SOURCES, ratio_or_zero),
    "Non-conversions by reason / A": (({"source": "browser", "reason": "microdata"},), positive),
    "Validation errors by code / A": (
        ({"code": "malformed_message"}, {"code": "missing_currency"}),
        positive,
    ),
    "PII values by key and outcome / A": (
        (
            *({"key": k, "outcome": "hashed"} for k in PII_KEYS),
            {"key": "em", "outcome": "prehashed"},  # the pixel's ud[em] is a SHA-256
        ),
        positive,
    ),
    # nothing dropped: 0 for every key that had values, not a missing line
    "PII dropped share by key / A": (tuple({"key": k} for k in PII_KEYS), zero),
    "Duplicates by method / A": (({"method": "event_id"},), positive),
    "Attribution candidates by window / A": (
        tuple({"window": w} for w in ("1d_click", "7d_click", "28d_click")),
        positive,
    ),
    "Dedup keys by worker / A": (({"instance": "{worker}"},), positive),  # not the forwarder
    "Batch duration by stage (p50 / p99) / A": (STAGES, positive),
    "Batch duration by stage (p50 / p99) / B": (STAGES, positive),
    "Batch size by stage (p50 / p99) / A": (STAGES, positive),
    "Batch size by stage (p50 / p99) / B": (STAGES, positive),
    "Merge window: held and merged / A": ((NONE,), zero),  # CONVSTREAM_MERGE_WINDOW=0
    "Merge window: held and merged / B": ((NONE,), zero),
    "Events sent, rejected, retried / A": ((NONE,), positive),
    "Events sent, rejected, retried / B": (({"reason": "rejected"},), positive),
    "Graph API requests by outcome / A": (({"outcome": "ok"}, {"outcome": "reject"}), positive),
    # a rejected batch of one event is not split; of more, it is
    "Graph API requests by outcome / B": ((NONE,), nonnegative),
    "Graph API request latency (p50 / p99) / A": ((NONE,), positive),
    "Graph API request latency (p50 / p99) / B": ((NONE,), positive),
    "Events waiting and lag / A": ((NONE,), zero),  # everything settled
    "Events waiting and lag / B": ((NONE,), zero),
    "Pixel state / A": (
        ({"pixel_id": PIXEL, "state": "paused"}, {"pixel_id": PIXEL, "state": "throttled"}),
        zero,
    ),
    "Pixel state / B": ((NONE,), one),  # active pixels
    # the collector: every sample message acknowledged, the line that is not JSON refused
    "Collector requests by endpoint and status / A": (
        (
            {"endpoint": "pixel", "status": "200"},
            {"endpoint": "capi", "status": "200"},
            {"endpoint": "capi", "status": "400"},
        ),
        positive,
    ),
    "Collector refusals by reason / A": (({"endpoint": "capi", "reason": "malformed"},), positive),
    "Collector messages written / A": (SOURCES, positive),
    "Collector messages written / B": ((NONE,), positive),
    "Collector request latency (p50 / p99) / A": (
        ({"endpoint": "pixel"}, {"endpoint": "capi"}),
        positive,
    ),
    "Collector request latency (p50 / p99) / B": (
        ({"endpoint": "pixel"}, {"endpoint": "capi"}),
        positive,
    ),
    "Collector Kafka connection and pending acks / A": (({"instance": "{collect}"},), one),
    "Collector Kafka connection and pending acks / B": ((NONE,), zero),
    "alert ConvstreamWorkerDown": (
        ({"__name__": "up", "job": "convstream", "instance": "{dead}"},),
        zero,
    ),
    "alert ConvstreamDeadLetterRatioHigh": (({"source": "server"},), share),
    # 1 of the 5 conversions of each round is rejected
    "alert ConvstreamForwardDeadLettersRising": ((NONE,), share),
}
# query -> why it returns nothing here
EMPTY: dict[str, str] = {
    "Warnings by code / A": "no conversion of the sample carries a warning",
    "Input progress: records skipped, seeks, lost / A": "no restart or rebalance: nothing "
    "is delivered twice (the counters get their first series when it happens)",
    "Input progress: records skipped, seeks, lost / B": "no seek without a skipped record",
    "Input progress: records skipped, seeks, lost / C": "no record expired unprocessed",
    "Events sent, rejected, retried / C": "the endpoint answered every request: no retry",
    "alert ConvstreamNoWorkers": "fires only when the convstream job has no target at all",
    "alert ConvstreamMixedVersions": "one version runs",
    "alert ConvstreamNoConversions": "conversions are written",
    "alert ConvstreamInputStopped": "input flows (and none flowed a day before)",
    "alert ConvstreamPiiDroppedHigh": "no user_data value of the sample is dropped",
    "alert ConvstreamBatchSlow": "batches take milliseconds",
    "alert ConvstreamInputLost": "no record expired unprocessed",
    "alert ConvstreamForwardThrottled": "the endpoint never throttles",
    "alert ConvstreamForwardPixelPaused": "the token is accepted",
    "alert ConvstreamForwardLagGrowing": "a few records, no lag",
    "alert ConvstreamCollectKafkaDown": "the collector's producer is connected",
    "alert ConvstreamCollectErrorsHigh": "no 5xx: Kafka acknowledges every message",
}
RAW_PII = ("John_Smith", "john_smith@", "Valery", "Mary", "O'Connor", "Menlo Park", "555-", "crm-")


def sample(name: str, round_: int) -> list[bytes]:
    out = [ln for ln in (EXAMPLES / name).read_bytes().splitlines() if ln.strip()]
    if round_ == 2:
        for old, new in ROUND2.items():
            out = [ln.replace(old, new) for ln in out]
    return out


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: run `make prometheus` (Debian package prometheus)")
    return path


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = http_get(url)
        assert status in (200, 400, 422), f"{url}: HTTP {status}: {body[:500]!r}"
        answer = json.loads(body)
        assert answer["status"] == "success", f"{params}: {answer.get('error')}"
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expr: str, want: float, timeout: float = 30) -> None:
        t0 = time.time()
        got = None
        while time.time() - t0 < timeout:
            got = self.value(expr)
            if got == want:
                return
            time.sleep(0.25)
        raise AssertionError(f"{expr} = {got}, expected {want} within {timeout}s")


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, list[str]]], Prometheus]]:
    procs: list[Prometheus] = []

    def start(jobs: dict[str, list[str]]) -> Prometheus:
        port = free_port()
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in jobs.items()
            ],
        }
        conf = tmp_path / "prometheus.yml"
        conf.write_text(json.dumps(config))  # JSON is YAML
        check = subprocess.run(
            [binary("promtool"), "check", "config", str(conf)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        log = tmp_path / "prometheus.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [
                    binary("prometheus"),
                    f"--config.file={conf}",
                    f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        p = Prometheus(f"http://127.0.0.1:{port}", proc, log)
        procs.append(p)
        t0 = time.time()
        while http_get(f"{p.url}/-/ready")[0] != 200:
            if proc.poll() is not None or time.time() - t0 > 30:
                raise AssertionError(f"prometheus did not start: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.terminate()
            try:
                p.proc.wait(10)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()


@pytest.fixture
def start_forwarder(start_worker: Callable[..., WorkerProc]) -> Callable[..., WorkerProc]:
    """`convstream forward` (its /readyz and /metrics on ``web_port``)."""
    return functools.partial(start_worker, command="forward", wait=False)


def settled(forwarder: WorkerProc, timeout: float = 30) -> None:
    """Wait until the forwarder has nothing waiting and has committed everything."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        waiting = forwarder.metric("convstream_forward_events_waiting")
        lag = forwarder.metric("convstream_forward_lag")
        if waiting == lag == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"forward not settled in {timeout}s: {waiting} waiting, lag {lag}")


def dashboard_queries() -> dict[str, str]:
    """'panel title / refId' -> PromQL with the Grafana variables substituted."""
    board = json.loads(DASHBOARD.read_text())

    def panels(ps: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    out = {}
    for p in panels(board["panels"]):
        for t in p.get("targets", []):
            expr = t["expr"].replace("$__rate_interval", RATE_INTERVAL)
            expr = expr.replace('=~"$instance"', '=~".*"')
            assert "$" not in expr, f"unsubstituted variable in {p['title']}: {expr}"
            out[f"{p['title']} / {t['refId']}"] = expr
    return out


def test_dashboard_and_alerts_against_live_prometheus(
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., WorkerProc],
    start_collector: Callable[..., CollectorProc],
    start_forwarder: Callable[[Settings], WorkerProc],
    start_prometheus: Callable[[dict[str, list[str]]], Prometheus],
    kafka: Any,
) -> None:
    rules = subprocess.run(
        [binary("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    n_rules = int(re.search(r"SUCCESS: (\d+) rules found", rules.stdout)[1])  # type: ignore[index]

    # convstream_dedup_keys is refreshed by the expiry sweep only (default every 60 s)
    s = collector_settings(make_settings(partitions=2, dedup_sweep_interval=0.5))
    s = s.with_overrides(
        topics=replace(s.topics, forward_dead_letter=s.topics.dead_letter + ".fwd")
    )
    kafka.create_topics(s, [*all_topics(s), s.topics.forward_dead_letter])
    ads = sample("ads_catalog.jsonl", 1)
    kafka.produce(s, s.topics.catalog, ads, keys=[json.loads(a)["ad_id"].encode() for a in ads])

    graph = GraphEndpoint({PIXEL: META_TOKEN}, reject_event_ids=REJECTED).start()
    try:
        fs = s.with_overrides(
            web_port=free_port(),
            forward=Forward(
                graph_url=graph.url,
                access_tokens=((PIXEL, META_TOKEN),),
                linger=0.1,
                timeout=10.0,
                retry_base=0.05,
                retry_max=0.5,
            ),
        )
        worker = start_worker(s, wait=False)
        collector = start_collector(s, wait=False)
        forwarder = start_forwarder(fs)
        dead = f"127.0.0.1:{free_port()}"  # a convstream worker that is down
        hostport = {
            "worker": f"127.0.0.1:{s.web_port}",
            "collect": f"127.0.0.1:{s.collect_port}",
            "forward": f"127.0.0.1:{fs.web_port}",
        }
        prom = start_prometheus(
            {
                "convstream": [hostport["worker"], dead],
                "convstream-forward": [hostport["forward"]],
                "convstream-collect": [hostport["collect"]],
            }
        )
        worker.wait_ready()
        collector.wait_ready()
        forwarder.wait_ready(60)

        messages = 0
        for round_ in (1, 2):
            reqs = replay.requests_for(
                sample("pixel_hits.jsonl", round_),
                sample("server_events.jsonl", round_),
                now=time.time(),
                token=TOKEN,
            )
            for r in reqs:  # one at a time, each read before the next: a defined order
                [status] = send_requests(collector.url, [r])
                if r.received_at is None:  # the sample line that is not JSON
                    assert status == 400
                    continue
                assert status == 200
                messages += 1
                worker.wait_metric("convstream_messages_in_total", messages, timeout=30)
            bad = [b"{not json " + str(i).encode() for i in range(MALFORMED[round_ - 1])]
            kafka.produce(s, s.topics.server_raw, bad)
            messages += len(bad)
            worker.wait_metric("convstream_messages_in_total", messages, timeout=30)
            forwarder.wait_metric("convstream_forward_events_sent_total", 4 * round_, timeout=30)
            forwarder.wait_metric("convstream_forward_events_rejected_total", round_, timeout=30)
            settled(forwarder)
            # Prometheus has what the processes export now
            prom.wait_value('sum(convstream_messages_in_total{job="convstream"})', messages)
            prom.wait_value(
                'sum(convstream_forward_events_sent_total{job="convstream-forward"})', 4 * round_
            )
            prom.wait_value(
                'sum(convstream_collect_messages_total{job="convstream-collect"})',
                collector.metric("convstream_collect_messages_total"),
            )
            time.sleep(1.5)  # and one more scrape of everything (histograms, gauges)
        # round 2 was new to dedup: it doubled the conversions
        assert worker.metric("convstream_conversions_out_total") == 10

        # the rules: all loaded, evaluated since the last scrape, healthy
        t_end = time.time()
        t0 = time.time()
        while True:
            groups = prom.api("rules")["groups"]
            loaded = [r for g in groups for r in g["rules"]]
            last = min((g.get("lastEvaluation", "0001") for g in groups), default="0001")
            if len(loaded) == n_rules and last >= time.strftime(
                "%Y-%m-%dT%H:%M:%S", time.gmtime(t_end + 1)
            ):
                break
            assert time.time() - t0 < 20, f"rules not evaluated: {groups}"
            time.sleep(0.5)
        assert [(r["name"], r["health"], r.get("lastError", "")) for r in loaded] == [
            (r["name"], "ok", "") for r in loaded
        ]
        alerts = {r["name"]: r["query"] for r in loaded}

        queries = {**dashboard_queries(), **{f"alert {k}": v for k, v in alerts.items()}}
        assert set(queries) == set(EXPECTED) | set(EMPTY), set(queries) ^ (
            set(EXPECTED) | set(EMPTY)
        )
        wrong = {}
        for name, expr in queries.items():
            got = {
                json.dumps(r["metric"], sort_keys=True): float(r["value"][1])
                for r in prom.query(expr)
            }
            if name in EMPTY:
                ok = got == {}
                want: Any = f"empty: {EMPTY[name]}"
            else:
                labels, check = EXPECTED[name]
                rows = [
                    {k: v.format(**hostport, dead=dead) for k, v in row.items()} for row in labels
                ]
                want = {json.dumps(row, sort_keys=True): check.__doc__ for row in rows}
                ok = set(got) == set(want) and all(
                    math.isfinite(v) and check(v) for v in got.values()
                )
            if not ok:
                wrong[name] = {"expr": expr, "got": got, "want": want}
        assert wrong == {}, json.dumps(wrong, indent=1)
        # and Prometheus' own evaluation of the rule file agrees (each `for:` outlasts the run)
        assert {r["name"]: r["state"] for r in loaded} == {
            name: "pending" if f"alert {name}" in EXPECTED else "inactive" for name in alerts
        }

        # the Worker variable (label_values(convstream_build_info, instance)): every process
        instances = prom.api("label/instance/values", **{"match[]": "convstream_build_info"})
        assert sorted(instances) == sorted(hostport.values())

        # no raw PII and no secret in any series Prometheus stored
        stored = json.dumps(prom.api("series", **{"match[]": '{job=~"convstream.*"}'}))
        for secret in (*RAW_PII, TOKEN, META_TOKEN):
            assert secret not in stored
    finally:
        graph.stop()
