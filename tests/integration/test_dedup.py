"""SPEC §6 on a real broker: browser/server copies, retries, the fallback, state that
survives a restart, a SIGKILL in the middle of a stream, and scale-out with a rebalance."""

from __future__ import annotations

import collections
import signal
import time
from typing import Any

import orjson
import pytest

from agents.outputs import partition_for
from bench.stores import recoveries
from streams.dedupe import partition_key
from tests.helpers import RECEIVED_AT, pixel_hit, server_event, server_message
from tests.integration.conftest import (
    all_topics,
    dedup_consumed,
    free_port,
    read_to_end,
    send_in_order,
)

pytestmark = pytest.mark.integration


def browser(eid: str | None, t: float, *, name: str = "Purchase", fbp: str = "fb.1.1.1") -> bytes:
    params = {"ev": name, "fbp": fbp, "ts": str(int(t * 1000))}
    if eid is not None:
        params["eid"] = eid
    hit = orjson.loads(pixel_hit(params))
    hit["received_at"] = t
    if eid is None:
        hit["query"] = "&".join(p for p in hit["query"].split("&") if not p.startswith("eid="))
    return orjson.dumps(hit)


def server(eid: str | None, t: float, *, name: str = "Purchase", fbp: str = "fb.1.1.1") -> bytes:
    ev = server_event(event_name=name, event_time=int(t) - 1)
    ev["user_data"]["fbp"] = fbp
    if eid is None:
        del ev["event_id"]
    else:
        ev["event_id"] = eid
    return server_message(ev, received_at=t)


def conversions(kafka: Any, s: Any, expect: int, idle: float = 4) -> list[dict[str, Any]]:
    got = kafka.read(s, s.topics.conversions, until_count=expect, idle_timeout=idle, max_wait=90)
    return [orjson.loads(v) for _, v, _, _ in got]


def unique_conversions(kafka: Any, s: Any, k: int, timeout: float = 120) -> list[dict[str, Any]]:
    """Read until k distinct conversion ids came out (repeats allowed: at-least-once)."""
    deadline = time.time() + timeout
    out: list[dict[str, Any]] = []
    while time.time() < deadline:
        out = conversions(kafka, s, expect=10**9, idle=3)
        if len({r["conversion_id"] for r in out}) >= k:
            break
    return conversions(kafka, s, expect=10**9, idle=2)


def test_copies_are_counted_once(make_settings, start_worker, kafka) -> None:
    s = make_settings()
    kafka.create_topics(s, all_topics(s))
    w = start_worker(s)
    t = RECEIVED_AT
    items = [
        ("browser", browser("o-1", t)), ("server", server("o-1", t + 1)),  # browser, then server
        ("server", server("o-2", t + 2)), ("browser", browser("o-2", t + 3)),  # server first
        ("server", server("o-3", t + 4)), ("server", server("o-3", t + 5)),  # retries
        ("server", server("o-3", t + 6)),
        ("server", server("o-4", t + 7, name="Purchase")),  # same id, other event name
        ("server", server("o-4", t + 8, name="AddToCart")),
        ("browser", browser(None, t + 9, fbp="fb.1.1.77")),  # fallback pair: browser first
        ("server", server(None, t + 10, fbp="fb.1.1.77")),
        ("server", server(None, t + 11, fbp="fb.1.1.77")),  # one-to-one: a second copy is kept
        ("server", server(None, t + 12, fbp="fb.1.1.88")),  # server first: never matched
        ("browser", browser(None, t + 13, fbp="fb.1.1.88")),
    ]  # fmt: skip
    send_in_order(kafka, s, w, items)
    out = conversions(kafka, s, expect=9)
    keys = sorted((r["event_name"], r["event_id"] or "-", tuple(r["sources"])) for r in out)
    assert keys == sorted(
        [
            ("Purchase", "o-1", ("browser",)),
            ("Purchase", "o-2", ("server",)),
            ("Purchase", "o-3", ("server",)),
            ("Purchase", "o-4", ("server",)),
            ("AddToCart", "o-4", ("server",)),
            ("Purchase", "-", ("browser",)),  # fbp 77: browser kept, absorbs one server copy
            ("Purchase", "-", ("server",)),  # fbp 77: the second server copy
            ("Purchase", "-", ("server",)),  # fbp 88: server came first
            ("Purchase", "-", ("browser",)),  # fbp 88: browser never dropped
        ]
    )
    assert w.metric("convstream_duplicates_total", method="event_id") == 4
    assert w.metric("convstream_duplicates_total", method="fbp") == 1
    assert w.metric("convstream_conversions_out_total") == 9


def test_a_duplicate_after_a_restart_is_still_a_duplicate(
    make_settings, start_worker, kafka
) -> None:
    s = make_settings()
    kafka.create_topics(s, all_topics(s))
    w = start_worker(s)
    send_in_order(kafka, s, w, [("server", server(f"r-{i}", RECEIVED_AT + i)) for i in range(20)])
    assert len(conversions(kafka, s, expect=20)) == 20
    w.stop()
    w2 = start_worker(s)  # same app id and data dir: state restored
    copies = [("browser", browser(f"r-{i}", RECEIVED_AT + 100 + i)) for i in range(20)]
    send_in_order(kafka, s, w2, copies)
    w2.wait_metric("convstream_duplicates_total", 20, timeout=60)
    assert len(conversions(kafka, s, expect=21, idle=3)) == 20


def many_copies(
    k: int, t0: float, *, names: tuple[str, ...] = ("Purchase",), prefix: str = "c"
) -> list[tuple[str, bytes]]:
    """k conversions, 3 copies each (browser, server, server retry), interleaved; the
    i-th is named ``names[i % len(names)]`` (the name picks the dedup partition)."""
    items = []
    for i in range(k):
        t, name = t0 + i * 0.01, names[i % len(names)]
        items += [
            ("browser", browser(f"{prefix}-{i}", t, name=name)),
            ("server", server(f"{prefix}-{i}", t + 0.001, name=name)),
            ("server", server(f"{prefix}-{i}", t + 0.002, name=name)),
        ]
    return items


def produce_all(kafka: Any, s: Any, items: list[tuple[str, bytes]]) -> None:
    kafka.produce(s, s.topics.pixel_raw, [v for src, v in items if src == "browser"])
    kafka.produce(s, s.topics.server_raw, [v for src, v in items if src == "server"])


def test_sigkill_loses_nothing_and_keeps_dedup_state(make_settings, start_worker, kafka) -> None:
    s = make_settings(batch_size=200)
    kafka.create_topics(s, all_topics(s))
    k = 3000
    items = many_copies(k, RECEIVED_AT)
    w = start_worker(s)
    produce_all(kafka, s, items)
    w.wait_metric("convstream_conversions_out_total", k // 5, timeout=60)
    w.stop(sig=signal.SIGKILL)  # mid-stream: no flush, no commit, no goodbye
    w2 = start_worker(s)  # ingest may have read everything already; dedup resumes
    dedup_consumed(s)  # the backlog is decided
    late = [("server", server(f"c-{i}", RECEIVED_AT + 100 + i)) for i in range(50)]
    produce_all(kafka, s, late)  # copies after the restart: still duplicates
    dedup_consumed(s)
    out = [orjson.loads(v) for _, v, _, _ in read_to_end(s, s.topics.conversions)]
    ids = collections.Counter(r["conversion_id"] for r in out)
    repeated = sum(n - 1 for n in ids.values())
    print(
        f"\ncrash test: sent {len(items) + len(late)} messages for {k} conversions; "
        f"emitted {len(out)} records, {len(ids)} unique, {repeated} repeated after the kill; "
        f"restarted worker: {w2.metric('convstream_input_seeks_total')} seeks back, "
        f"skipped {w2.metric('convstream_input_skipped_total', verdict='done')} done / "
        f"{w2.metric('convstream_input_skipped_total', verdict='ahead')} ahead"
    )
    assert len(ids) == k  # nothing lost, nothing extra
    kept_late = [r["event_id"] for r in out if r["received_at"] >= RECEIVED_AT + 100]
    assert kept_late == []  # every late copy was a duplicate
    assert_repeats_are_identical(out)


def differing_repeats(out: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Conversion ids written more than once with different content (event id, fields)."""
    by_id: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in out:
        by_id[r["conversion_id"]].append({k: v for k, v in r.items() if k != "emitted_at"})
    return [
        (rs[0]["event_id"], sorted(k for k in rs[0] if any(x[k] != rs[0][k] for x in rs)))
        for rs in by_id.values()
        if any(x != rs[0] for x in rs)
    ]


def assert_repeats_are_identical(out: list[dict[str, Any]]) -> None:
    """A repeat is the same conversion again (at-least-once), never a different copy."""
    differing = differing_repeats(out)
    assert differing == [], f"{len(differing)} repeats differ, e.g. {differing[:3]}"


def test_scale_out_with_a_rebalance_gives_the_same_output(
    make_settings, start_worker, kafka
) -> None:
    s = make_settings(partitions=6, batch_size=200)
    kafka.create_topics(s, all_topics(s))
    k = 2000
    items = many_copies(k, RECEIVED_AT)
    w1 = start_worker(s, name="w1")
    w2 = start_worker(
        s.with_overrides(web_port=free_port(), data_dir=s.data_dir + "-2"), name="w2"
    )
    produce_all(kafka, s, items[: len(items) // 2])
    w1.wait_metric("convstream_messages_in_total", 1, timeout=60)
    w3 = start_worker(  # joins mid-stream: partitions move
        s.with_overrides(web_port=free_port(), data_dir=s.data_dir + "-3"), name="w3", wait=False
    )
    produce_all(kafka, s, items[len(items) // 2 :])
    w3.wait_ready()
    out = unique_conversions(kafka, s, k)
    ids = collections.Counter(r["conversion_id"] for r in out)
    print(
        f"\nscale-out: {len(items)} messages for {k} conversions over 3 workers; emitted "
        f"{len(out)} records, {len(ids)} unique, {sum(n - 1 for n in ids.values())} repeated"
    )
    assert len(ids) == k
    assert {r["event_id"] for r in out} == {f"c-{i}" for i in range(k)}
    assert_repeats_are_identical(out)
    # which copy is first depends on arrival across the two raw topics; how many are
    # duplicates does not
    dups = sum(w.metric("convstream_duplicates_total") for w in (w1, w2, w3))
    assert dups == 2 * k  # a record is decided once, whichever worker holds it


# one event name per dedup partition of 4 (the partition key is pixel|event name)
SPREAD: tuple[str, ...] = ("Purchase", "ViewContent", "InitiateCheckout", "Contact")


def test_a_standby_takes_over_a_killed_worker_without_a_full_restore(
    make_settings, start_worker, kafka
) -> None:
    """Two workers with CONVSTREAM_STANDBY_REPLICAS=1: each keeps a warm copy of the
    other's table partitions, so when one is killed the survivor's recovery starts at
    its copy's offset, not at the start of the changelog (Faust's recovery log says
    where it started), and the state is there: copies sent after the kill are dropped."""
    s = make_settings(partitions=4, batch_size=200, standby_replicas=1)
    kafka.create_topics(s, all_topics(s))
    assert {partition_key_of(n) for n in SPREAD} == {0, 1, 2, 3}
    k = 1000
    w1 = start_worker(s, name="w1")
    produce_all(kafka, s, many_copies(k, RECEIVED_AT, names=SPREAD))
    unique_conversions(kafka, s, k)
    w2 = start_worker(  # joins: restores its actives, keeps standby copies of w1's
        s.with_overrides(web_port=free_port(), data_dir=s.data_dir + "-2"), name="w2"
    )
    produce_all(kafka, s, many_copies(k, RECEIVED_AT + 100, names=SPREAD, prefix="d"))
    unique_conversions(kafka, s, 2 * k)
    dups = w2.metric("convstream_duplicates_total")
    t_kill = time.time()
    w1.stop(sig=signal.SIGKILL)
    copies = [
        ("server", server(f"c-{i}", RECEIVED_AT + 300 + i, name=SPREAD[i % 4])) for i in range(40)
    ]
    new = [
        ("server", server(f"n-{i}", RECEIVED_AT + 400 + i, name=SPREAD[i % 4])) for i in range(40)
    ]
    produce_all(kafka, s, copies + new)  # copies of kept conversions, and 40 new ones
    out = unique_conversions(kafka, s, 2 * k + 40, timeout=240)
    w2.wait_metric("convstream_duplicates_total", dups + 40, timeout=60)
    ids = collections.Counter(r["conversion_id"] for r in out)
    assert len(ids) == 2 * k + 40
    assert {r["event_id"] for r in out} >= {f"n-{i}" for i in range(40)}
    assert_repeats_are_identical(out)
    # where w2's recovery after the kill started reading the partitions it took over
    recs = recoveries(w2.log)
    held = [r for r in recs if r.ts < t_kill][-1]
    takeovers = [r for r in recs if r.ts > t_kill]
    assert takeovers, "w2 ran no recovery after the kill"
    taken = [tp for tp in takeovers[-1].highwater if tp not in held.highwater]
    assert any(tp[0].endswith("-dedup-changelog") for tp in taken), (held, takeovers)
    for rec in takeovers:
        read = {
            tp: (rec.records_read(tp), rec.highwater[tp] + 1) for tp in taken if tp in rec.highwater
        }
        print(f"\nstandby takeover: changelog records read / held per partition: {read}")
        for tp, (n, total) in read.items():
            assert rec.start.get(tp, -1) >= 0, f"{tp} restored from the start of the changelog"
            assert n * 10 < total, f"{tp}: read {n} of {total} changelog records"


def partition_key_of(name: str, partitions: int = 4) -> int:
    """The dedup partition of this module's events named ``name`` (pixel 1234567890)."""
    rec = {"pixel_id": "1234567890", "event_name": name}
    return partition_for(partition_key(rec), partitions)


def test_expired_state_is_deleted_and_not_resurrected(make_settings, start_worker, kafka) -> None:
    s = make_settings(partitions=1, dedup_window=3600, dedup_sweep_interval=0.0)
    kafka.create_topics(s, all_topics(s))
    w = start_worker(s)
    t = RECEIVED_AT
    send_in_order(kafka, s, w, [("server", server("old", t))])
    # stream time moves past the window: the sweep deletes the key of "old"
    send_in_order(kafka, s, w, [("server", server("new", t + 3600 + 60))])
    w.wait_metric("convstream_dedup_expired_keys_total", 1, timeout=30)
    w.stop()
    w2 = start_worker(s)  # restored from RocksDB and the changelog
    # a copy of "old" that would be a duplicate if its key came back
    send_in_order(kafka, s, w2, [("browser", browser("old", t + 10))])
    out = conversions(kafka, s, expect=3, idle=3)
    assert sorted(r["event_id"] for r in out) == ["new", "old", "old"]
    assert w2.metric("convstream_duplicates_total") == 0


def test_48h_edge_on_the_broker(make_settings, start_worker, kafka) -> None:
    s = make_settings(partitions=1)
    kafka.create_topics(s, all_topics(s))
    w = start_worker(s)
    t, window = RECEIVED_AT - 200_000, 172_800  # received_at is the reference, not the clock
    send_in_order(
        kafka, s, w,
        [
            ("server", server("edge", t)),
            ("browser", browser("edge", t + window)),  # exactly 48 h later: a duplicate
            ("server", server("edge", t + window + 1)),  # one second more: a new conversion
        ],
    )  # fmt: skip
    out = conversions(kafka, s, expect=2, idle=3)
    assert [(r["event_id"], r["received_at"]) for r in out] == [
        ("edge", t),
        ("edge", t + window + 1),
    ]
    # a batch's counts are published after its changelog is acked, a moment after its
    # outputs can be read
    w.wait_metric("convstream_dedup_late_duplicates_total", 1, timeout=30)
    assert w.metric("convstream_duplicates_total") == 1
    assert w.metric("convstream_dedup_late_duplicates_total") == 1


def test_merge_window_merges_copies_and_held_ones_survive_a_sigkill(
    make_settings, start_worker, kafka
) -> None:
    s = make_settings(partitions=1, merge_window=3600)
    kafka.create_topics(s, all_topics(s))
    t = RECEIVED_AT - 100_000
    w = start_worker(s)
    send_in_order(kafka, s, w, [("browser", browser("m-1", t)), ("server", server("m-1", t + 1))])
    w.wait_metric("convstream_dedup_merges_total", 1, timeout=30)
    assert w.metric("convstream_dedup_held") == 1
    assert w.metric("convstream_conversions_out_total") == 0  # held, not emitted
    w.stop(sig=signal.SIGKILL)
    w2 = start_worker(s)  # the held conversion comes back from RocksDB / the changelog
    send_in_order(kafka, s, w2, [("server", server("m-1", t + 2))])  # a retry: merged too
    w2.wait_metric("convstream_dedup_merges_total", 1, timeout=30)
    # stream time passes the window: m-1 is released; m-2 is held in its turn
    send_in_order(kafka, s, w2, [("browser", browser("m-2", t + 3600 + 10))])
    out = conversions(kafka, s, expect=2, idle=4)
    assert [r["event_id"] for r in out] == ["m-1"]
    rec = out[0]
    assert rec["sources"] == ["browser", "server"]
    assert rec["dedup"] == {"method": "event_id", "duplicates": 2}
    assert rec["received_at"] == t  # the first copy, with what the others added
    assert {"em", "fbp", "client_ip_address"} <= set(rec["user_data"])
    w2.wait_metric("convstream_dedup_held", 1, timeout=10)
    assert w2.metric("convstream_dedup_held") == 1  # m-2


def test_merge_window_releases_a_quiet_partition(make_settings, start_worker, kafka) -> None:
    s = make_settings(partitions=3, merge_window=2)
    kafka.create_topics(s, all_topics(s))
    w = start_worker(s)
    t = RECEIVED_AT
    send_in_order(kafka, s, w, [("browser", browser("q-1", t)), ("server", server("q-1", t + 1))])
    # no later event moves stream time: only the ticks (wall clock) can release it, merged
    out = conversions(kafka, s, expect=1, idle=15)
    assert [(r["event_id"], r["sources"]) for r in out] == [("q-1", ["browser", "server"])]
    deadline = time.time() + 10
    while w.metric("convstream_dedup_held") != 0 and time.time() < deadline:
        time.sleep(0.2)
    assert w.metric("convstream_dedup_held") == 0
    assert w.metric("convstream_dedup_merges_total") == 1
