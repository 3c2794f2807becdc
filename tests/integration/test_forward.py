"""``convstream forward`` on a real broker against the Graph-compatible test endpoint on
127.0.0.1 (tests/graph_endpoint.py): every conversion accepted once per (event_name,
event_id); under injected faults nothing lost and the one bad event dead-lettered with
Meta's code; SIGKILL and restart repeats only the same event_ids; a rejected token pauses
its pixel visibly without dropping anything; no token or raw PII in logs, metrics or
dead letters."""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from agents.kafka_io import client_kwargs, end_offsets
from bench.traffic import PIXELS, conversions
from streams import forward as fwd
from streams.offline import ordered, process, read_lines
from streams.settings import Forward, Settings
from tests.graph_endpoint import FAULTS, GraphEndpoint, mixed_faults, scripted
from tests.integration.conftest import REPO, WorkerProc, free_port, http_get

pytestmark = pytest.mark.integration

EXAMPLES = REPO / "schemas" / "examples"
META_NOW = 1795404000.0  # Meta's clock in these tests: the sample data is hours old
TOKENS = {PIXELS[0]: "EAAtokenAlpha0123456789", PIXELS[1]: "EAAtokenBravo9876543210"}
RAW_PII = ("@example.org", "buyer.", "Mary", "O'Connor", "Menlo Park", "555-", "crm-")


def sample_conversions() -> list[dict[str, Any]]:
    """The sample traffic of `convstream demo` (schemas/examples) as conversions."""
    pixel = read_lines("browser", "events.pixel.raw", (EXAMPLES / "pixel_hits.jsonl").read_bytes())
    server = read_lines(
        "server", "events.server.raw", (EXAMPLES / "server_events.jsonl").read_bytes()
    )
    return list(process(Settings(), ordered(pixel, server), now=META_NOW).conversions)


def key_of(event: dict[str, Any]) -> tuple[str, str]:
    return (event["event_name"], event["event_id"])


def expected_keys(convs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {key_of(fwd.capi_event(c)): c for c in convs}


@pytest.fixture
def endpoint() -> Iterator[Callable[..., GraphEndpoint]]:
    eps: list[GraphEndpoint] = []

    def start(**kw: Any) -> GraphEndpoint:
        ep = GraphEndpoint(dict(TOKENS), now=lambda: META_NOW, **kw).start()
        eps.append(ep)
        return ep

    yield start
    for ep in eps:
        ep.stop()


@pytest.fixture
def fsettings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(ep: GraphEndpoint, tokens: dict[str, str] | None = None, **fw: Any) -> Settings:
        s = make_settings()
        base = {
            "graph_url": ep.url,
            "access_tokens": tuple(sorted((tokens or TOKENS).items())),
            "linger": 0.2,
            "timeout": 1.0,
            "retry_base": 0.05,
            "retry_max": 0.5,
            "throttle_wait": 0.5,
            "pause_probe": 1.0,
        }
        base.update(fw)
        topics = s.topics
        from dataclasses import replace

        topics = replace(topics, forward_dead_letter=topics.dead_letter + ".forward")
        return s.with_overrides(forward=Forward(**base), topics=topics)

    return make


@pytest.fixture
def start_forwarder(start_worker: Callable[..., WorkerProc]) -> Callable[..., WorkerProc]:
    """`convstream forward` (its /readyz and /metrics on ``web_port``)."""
    return functools.partial(start_worker, command="forward", ready_timeout=60)


def produce(kafka: Any, s: Settings, convs: list[dict[str, Any]], extra: list[bytes] = ()) -> None:  # type: ignore[assignment]
    kafka.create_topics(s, [s.topics.conversions, s.topics.forward_dead_letter])
    values = [orjson.dumps(c) for c in convs] + list(extra)
    keys = [str(c["conversion_id"]).encode() for c in convs] + [b"junk"] * len(extra)
    kafka.produce(s, s.topics.conversions, values, keys)


def wait_accepted(ep: GraphEndpoint, keys: set[tuple[str, str]], timeout: float = 60) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if keys <= {key_of(a["event"]) for a in list(ep.accepted)}:
            return
        time.sleep(0.1)
    missing = keys - {key_of(a["event"]) for a in list(ep.accepted)}
    raise AssertionError(f"{len(missing)} events not accepted within {timeout}s")


def committed(s: Settings) -> dict[int, int]:
    async def run() -> dict[int, int]:
        admin = AIOKafkaAdminClient(**client_kwargs(s))
        await admin.start()
        try:
            offs = await admin.list_consumer_group_offsets(f"{s.app_id}-forward")
        finally:
            await admin.close()
        return {
            tp.partition: om.offset for tp, om in offs.items() if tp.topic == s.topics.conversions
        }

    return asyncio.run(run())


def wait_committed(s: Settings, timeout: float = 20) -> None:
    ends = {p: o for p, o in asyncio.run(end_offsets(s, s.topics.conversions)).items() if o}
    t0 = time.time()
    got: dict[int, int] = {}
    while time.time() - t0 < timeout:
        got = committed(s)
        if all(got.get(p) == o for p, o in ends.items()):
            return
        time.sleep(0.2)
    raise AssertionError(f"committed {got}, end offsets {ends}")


def check_accepted(ep: GraphEndpoint, convs: list[dict[str, Any]], *, exactly_once: bool) -> None:
    want = expected_keys(convs)
    got = Counter(key_of(a["event"]) for a in ep.accepted)
    assert set(got) == set(want), "accepted events differ from the conversions sent"
    if exactly_once:
        assert max(got.values()) == 1, [k for k, n in got.items() if n > 1][:5]
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for a in ep.accepted:
        by_key.setdefault(key_of(a["event"]), []).append(a)
    for k, copies in by_key.items():
        conv = want[k]
        for a in copies:  # the right pixel, its test code, the record less our fields
            assert a["pixel"] == conv["pixel_id"]
            assert a["test_event_code"] == conv["test_event_code"]
            assert a["event"] == fwd.capi_event(conv)
            assert not set(a["event"]) & fwd.CONVSTREAM_ONLY


def test_sample_traffic_each_event_accepted_once_in_batches(
    kafka: Any,
    endpoint: Callable[..., GraphEndpoint],
    fsettings: Callable[..., Settings],
    start_forwarder: Callable[..., WorkerProc],
) -> None:
    ep = endpoint()
    s = fsettings(ep)
    convs = sample_conversions() + conversions(2600)
    assert any(c["event_id"] is None for c in convs)  # event_id = conversion_id case
    produce(kafka, s, convs)
    f = start_forwarder(s)
    wait_accepted(ep, set(expected_keys(convs)))
    wait_committed(s)
    check_accepted(ep, convs, exactly_once=True)
    sizes = [r.events for r in ep.requests]
    assert {r.kind for r in ep.requests} == {"ok"}  # the right token for every pixel
    assert max(sizes) == 1000 and len(sizes) < len(convs) / 100
    assert all(b["access_token"] == TOKENS[b["pixel"]] for b in ep.bodies)
    assert f.metric("convstream_forward_events_sent_total") == len(convs)
    assert f.metric("convstream_forward_pixel_state", pixel_id=PIXELS[0], state="active") == 1
    assert f.metric("convstream_forward_events_waiting") == 0


def test_faults_lose_nothing_and_dead_letter_the_rejected_event(
    kafka: Any,
    endpoint: Callable[..., GraphEndpoint],
    fsettings: Callable[..., Settings],
    start_forwarder: Callable[..., WorkerProc],
) -> None:
    convs = conversions(1200, seed=11)
    bad = convs[417]
    bad_id = fwd.capi_event(bad)["event_id"]
    old = convs[903] = dict(convs[903], event_time=int(META_NOW) - 8 * 86_400)  # > 7 days
    ep = endpoint(
        faults=scripted(list(FAULTS), then=mixed_faults(0.35, seed=5)),
        reject_event_ids=frozenset({bad_id}),
        retry_after=0.4,
        timeout_sleep=1.2,
        slow_sleep=0.2,
    )
    s = fsettings(ep, concurrency=1, batch_size=100, timeout=0.6)
    leak = orjson.dumps({"pixel_id": PIXELS[0], "user_data": {"em": "leak.buyer@example.org"}})
    produce(kafka, s, convs, extra=[leak, b"not json"])
    f = start_forwarder(s)
    good = [c for c in convs if c is not bad and c is not old]
    wait_accepted(ep, set(expected_keys(good)), timeout=90)
    wait_committed(s, timeout=30)
    check_accepted(ep, good, exactly_once=True)

    kinds = Counter(r.kind for r in ep.requests)
    failed = sum(n for k, n in kinds.items() if k in FAULTS and k != "slow")
    assert failed / len(ep.requests) >= 0.3, kinds
    assert {"http_500", "code_1", "code_2", "http_429", "code_613", "timeout", "reset"} <= set(
        kinds
    )
    # a throttled pixel waits Retry-After: no request of that pixel arrives sooner after
    # the throttling answer (a timed-out request is answered late, so arrival counts)
    throttles = [r for r in ep.requests if r.retry_after is not None]
    assert throttles
    for r in throttles:
        after = [q.arrived for q in ep.requests if q.pixel == r.pixel and q.arrived > r.at]
        if after:
            assert min(after) - r.at >= r.retry_after - 0.05, (r, min(after) - r.at)

    dls = [orjson.loads(v) for _, v, *_ in kafka.read(s, s.topics.forward_dead_letter)]
    by_reason = Counter(d["reason"] for d in dls)
    assert by_reason == {"rejected": 2, "invalid_record": 2}
    rejected = {d["event_id"]: d for d in dls if d["reason"] == "rejected"}
    one = rejected[bad_id]
    assert (one["code"], one["subcode"], one["http_status"]) == (100, 2804007, 400)
    assert one["event"] == fwd.capi_event(bad)
    assert one["message"] and one["pixel_id"] == bad["pixel_id"]
    too_old = rejected[fwd.capi_event(old)["event_id"]]
    assert (too_old["code"], too_old["subcode"]) == (100, 2804003)
    assert too_old["event"] == fwd.capi_event(old)
    schema_check(dls)
    assert f.metric("convstream_forward_events_rejected_total", reason="rejected") == 2
    assert f.metric("convstream_forward_events_retried_total", reason="throttled") > 0
    assert f.metric("convstream_forward_events_retried_total", reason="timeout") > 0
    assert f.metric("convstream_forward_requests_total", outcome="throttle") > 0
    assert f.metric("convstream_forward_splits_total") >= 6
    no_secrets_or_pii(f, dls)


def schema_check(dls: list[dict[str, Any]]) -> None:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = [json.loads(p.read_text()) for p in (REPO / "schemas").glob("*.schema.json")]
    reg: Registry[Any] = Registry().with_resources(
        (x["$id"], Resource.from_contents(x)) for x in schemas
    )
    schema = next(x for x in schemas if x["$id"].endswith("/forward_dead_letter.schema.json"))
    v = Draft202012Validator(schema, registry=reg)
    for d in dls:
        assert not list(v.iter_errors(d)), d


def no_secrets_or_pii(f: WorkerProc, dls: list[dict[str, Any]]) -> None:
    texts = {
        "log": f.log.read_text(),
        "metrics": f.metrics(),
        "dead letters": "\n".join(orjson.dumps(d).decode() for d in dls),
        "readyz": http_get(f"{f.url}/readyz")[1].decode(),
    }
    secrets = [*TOKENS.values(), *(t for _, t in f.settings.forward.access_tokens)]
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a token in the {where}"
        for pii in RAW_PII:
            assert pii not in text, f"raw PII {pii!r} in the {where}"
    assert "pixel_id" in texts["log"]  # the log is there and says things


def test_sigkill_and_restart_lose_nothing_repeat_only_same_event_ids(
    kafka: Any,
    endpoint: Callable[..., GraphEndpoint],
    fsettings: Callable[..., Settings],
    start_forwarder: Callable[..., WorkerProc],
) -> None:
    convs = conversions(3000, seed=23)
    ep = endpoint(faults=mixed_faults(0.5, seed=3, kinds=("slow",)), slow_sleep=0.15)
    s = fsettings(ep, concurrency=2, batch_size=50, linger=0.05, max_waiting=1000)
    produce(kafka, s, convs)
    f = start_forwarder(s)
    t0 = time.time()
    while len(ep.accepted) < 600 and time.time() - t0 < 60:
        time.sleep(0.05)
    f.stop(signal.SIGKILL)
    before = len(ep.accepted)
    assert 0 < before < len(convs), before
    start_forwarder(s)
    wait_accepted(ep, set(expected_keys(convs)), timeout=90)
    wait_committed(s)
    check_accepted(ep, convs, exactly_once=False)  # repeats carry the same event
    repeats = len(ep.accepted) - len(convs)
    print(f"\nSIGKILL after {before} accepted; {repeats} repeated after the restart")
    # a crash repeats at most the records read and not committed (bounded read-ahead)
    assert repeats <= s.forward.max_waiting + s.forward.batch_size


def test_rejected_token_pauses_the_pixel_without_dropping(
    kafka: Any,
    endpoint: Callable[..., GraphEndpoint],
    fsettings: Callable[..., Settings],
    start_forwarder: Callable[..., WorkerProc],
) -> None:
    ep = endpoint()
    wrong = dict(TOKENS, **{PIXELS[1]: "EAAwrongTokenXYZ111"})
    s = fsettings(ep, tokens=wrong, pause_probe=0.5)
    convs = conversions(600, seed=31)
    produce(kafka, s, convs)
    f = start_forwarder(s, wait=False)
    alpha = [c for c in convs if c["pixel_id"] == PIXELS[0]]
    wait_accepted(ep, set(expected_keys(alpha)))
    f.wait_metric("convstream_forward_pixel_state", 1, pixel_id=PIXELS[1], state="paused")
    status, body = http_get(f"{f.url}/readyz")
    assert status == 503 and json.loads(body)["paused_pixels"] == [PIXELS[1]]
    assert "pixel paused" in f.log.read_text()
    f.wait_metric("convstream_forward_events_retried_total", 1, reason="paused")
    assert f.metric("convstream_forward_events_rejected_total") == 0  # nothing dropped
    assert not any(a["pixel"] == PIXELS[1] for a in ep.accepted)
    ends = asyncio.run(end_offsets(s, s.topics.conversions))
    assert sum(committed(s).values()) < sum(ends.values())  # bravo's events not committed
    no_secrets_or_pii(f, [])
    f.stop()
    start_forwarder(
        s.with_overrides(
            forward=Forward(
                **{**_fields(s.forward), "access_tokens": tuple(sorted(TOKENS.items()))}
            )
        )
    )
    wait_accepted(ep, set(expected_keys(convs)))
    wait_committed(s)
    check_accepted(ep, convs, exactly_once=False)


def _fields(fw: Forward) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(fw, f.name) for f in fields(fw)}


def test_two_forwarders_share_the_partitions(
    kafka: Any,
    endpoint: Callable[..., GraphEndpoint],
    fsettings: Callable[..., Settings],
    start_forwarder: Callable[..., WorkerProc],
) -> None:
    """Scale-out: a second forwarder joins the group mid-stream (a rebalance); every
    event is accepted, repeats carry the same event, all offsets end committed."""
    convs = conversions(2400, seed=41)
    ep = endpoint(faults=mixed_faults(1.0, seed=9, kinds=("slow",)), slow_sleep=0.25)
    s = fsettings(ep, concurrency=1, batch_size=100, linger=0.05, max_waiting=1000)
    produce(kafka, s, convs)
    first = start_forwarder(s)
    t0 = time.time()
    while len(ep.accepted) < 400 and time.time() - t0 < 30:
        time.sleep(0.05)
    second = start_forwarder(s.with_overrides(web_port=free_port()))
    wait_accepted(ep, set(expected_keys(convs)), timeout=90)
    wait_committed(s)
    check_accepted(ep, convs, exactly_once=False)
    sent = [w.metric("convstream_forward_events_sent_total") for w in (first, second)]
    assert all(n > 0 for n in sent), sent  # both did part of the work
