"""Dedup decisions follow received_at, not the order the two raw topics are read in
(SPEC §6), on a real broker.

Traffic with browser/server copies on both sides in time (a server copy received up to
5 s *before* its browser twin, or after it), with and without event ids, browser events
sharing an fbp, and retries. The whole pixel backlog is produced first, then the whole
server backlog, and only then does the worker start: read naively, one topic's backlog
would race ahead of the other's. The worker must give what ``convstream process`` gives
for the same messages; after a SIGKILL and a restart on an empty data directory, the
same unique conversions (a repeat only as an identical record)."""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import RECEIVED_AT
from tests.integration.conftest import all_topics
from tests.integration.test_dedup import browser, server
from tests.integration.test_parity_and_pii import run_process, without_emitted

pytestmark = pytest.mark.integration


def traffic(k: int, seed: int = 5) -> tuple[list[tuple[float, bytes]], list[tuple[float, bytes]]]:
    """(pixel, server) messages for about k conversions, each list in received_at order."""
    rng = random.Random(seed)
    pixel: list[tuple[float, bytes]] = []
    srv: list[tuple[float, bytes]] = []
    for i in range(k):
        t = RECEIVED_AT + i * 0.37
        d = rng.choice((-1, 1)) * rng.uniform(0.05, 5)  # the server copy: before or after
        fbp = f"fb.1.1795300000000.{rng.randrange(k // 3 + 1)}"  # some browsers share one
        name = rng.choice(("Purchase", "Lead", "AddToCart"))
        r = rng.random()
        if r < 0.4:  # a pair by event id
            pixel.append((t, browser(f"e-{i}", t, name=name, fbp=fbp)))
            srv.append((t + d, server(f"e-{i}", t + d, name=name, fbp=fbp)))
        elif r < 0.7:  # an id-less server copy: the fbp rule (browser with or without id)
            eid = f"b-{i}" if r < 0.55 else None
            pixel.append((t, browser(eid, t, name=name, fbp=fbp)))
            srv.append((t + d, server(None, t + d, name=name, fbp=fbp)))
        elif r < 0.8:  # a retried server event
            srv.append((t, server(f"r-{i}", t, name=name, fbp=fbp)))
            srv.append((t + 30, server(f"r-{i}", t + 30, name=name, fbp=fbp)))
        elif r < 0.9:
            pixel.append((t, browser(f"o-{i}", t, name=name, fbp=fbp)))
        else:
            srv.append((t, server(None, t, name=name, fbp=fbp)))
    pixel.sort(key=lambda x: x[0])
    srv.sort(key=lambda x: x[0])
    return pixel, srv


def expected(tmp_path: Path, s: Any, pixel: list[bytes], srv: list[bytes]) -> list[dict[str, Any]]:
    pf, sf = tmp_path / "pixel.jsonl", tmp_path / "server.jsonl"
    pf.write_bytes(b"\n".join(pixel) + b"\n")
    sf.write_bytes(b"\n".join(srv) + b"\n")
    return run_process(tmp_path, s, pf, sf)["conversions"]


def by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        r = without_emitted(r)
        prev = out.setdefault(r["conversion_id"], r)
        assert prev == r, f"a repeat that is not identical: {r['conversion_id'][:8]}"
    return out


def produce_backlogs(kafka: Any, s: Any, pixel: list[bytes], srv: list[bytes]) -> None:
    kafka.produce(s, s.topics.pixel_raw, pixel)  # one topic's backlog first,
    kafka.produce(s, s.topics.server_raw, srv)  # then the other's


def read_all(kafka: Any, s: Any) -> list[dict[str, Any]]:
    """Every conversion, until none came for 8 s (repeats included)."""
    got = kafka.read(s, s.topics.conversions, idle_timeout=8, max_wait=150)
    return [orjson.loads(v) for _, v, _, _ in got]


def test_backlogs_read_at_different_paces_give_what_process_gives(
    make_settings, start_worker, kafka, tmp_path
) -> None:
    s = make_settings(partitions=4)
    kafka.create_topics(s, all_topics(s))
    pixel, srv = traffic(1500)
    pv, sv = [v for _, v in pixel], [v for _, v in srv]
    want = by_id(expected(tmp_path, s, pv, sv))
    idless = [r for r in want.values() if r.get("event_id") is None]
    assert len(want) > 1000 and len(idless) > 200
    produce_backlogs(kafka, s, pv, sv)
    w = start_worker(s)
    records = read_all(kafka, s)
    got = by_id(records)
    assert len(records) == len(got)  # no crash, no repeat
    assert sorted(got) == sorted(want)
    assert {k: v for k, v in got.items() if v != want[k]} == {}
    assert w.metric("convstream_dedup_out_of_order_total") == 0


@pytest.mark.parametrize("lateness", [0.0, 2.0])
def test_after_sigkill_and_an_empty_data_dir_the_same_conversions(
    make_settings, start_worker, kafka, tmp_path, lateness: float
) -> None:
    # with a lateness, events are buffered when the worker is killed: the new one reads
    # again from the oldest buffered record and skips what was decided before
    s = make_settings(partitions=4, batch_size=200, dedup_lateness=lateness)
    kafka.create_topics(s, all_topics(s))
    pixel, srv = traffic(1500, seed=8)
    pv, sv = [v for _, v in pixel], [v for _, v in srv]
    want = by_id(expected(tmp_path, s, pv, sv))
    produce_backlogs(kafka, s, pv, sv)
    w1 = start_worker(s, name="w1")
    w1.wait_metric("convstream_messages_in_total", len(pv) // 2, timeout=60)
    w1.stop(signal.SIGKILL)
    # a new machine: nothing of w1's local state, only the changelogs
    w2 = start_worker(s.with_overrides(data_dir=str(tmp_path / "w2-data")), name="w2")
    got = by_id(read_all(kafka, s))
    assert sorted(got) == sorted(want)
    assert {k: v for k, v in got.items() if v != want[k]} == {}
    assert w2.metric("convstream_input_lost_total") == 0
