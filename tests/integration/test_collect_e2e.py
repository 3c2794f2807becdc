"""HTTP -> collector -> Kafka -> worker -> conversions.enriched: the sample traffic (as
`convstream demo` sends it) comes out as it does when produced directly."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams import offline as offline_mod
from streams import replay
from streams.cli import send_requests
from streams.tally import Tally
from tests.integration.collect_helpers import (
    TOKEN,
    collector_settings,
)
from tests.integration.conftest import REPO, all_topics
from tests.integration.test_parity_and_pii import comparable_dead_letter, without_emitted

pytestmark = pytest.mark.integration
EXAMPLES = REPO / "schemas" / "examples"
# what a time shift changes; everything else must be equal
TIMES = ("event_time", "received_at", "emitted_at", "rejected_at", "conversion_id")


def lines(name: str) -> list[bytes]:
    return [ln for ln in (EXAMPLES / name).read_bytes().splitlines() if ln.strip()]


def timeless(rec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in rec.items() if k not in TIMES}
    ud = out.get("user_data")
    if isinstance(ud, dict):  # fbp / fbc carry a creation time
        out["user_data"] = {k: v for k, v in ud.items() if k not in ("fbp", "fbc")}
    out.pop("click_time", None)
    if isinstance(out.get("event"), dict):  # a dead letter's event
        out["event"] = timeless(out["event"])
    return out


def key(rec: dict[str, Any]) -> bytes:
    return orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)


def test_sample_traffic_over_http_equals_produced_directly(
    make_settings: Any, start_worker: Any, start_collector: Any, kafka: Any, tmp_path: Path
) -> None:
    s = collector_settings(make_settings(partitions=1))
    kafka.create_topics(s, all_topics(s))
    ads = lines("ads_catalog.jsonl")
    kafka.produce(s, s.topics.catalog, ads, keys=[orjson.loads(a)["ad_id"].encode() for a in ads])
    worker = start_worker(s)
    collector = start_collector(s)

    pixel, server = lines("pixel_hits.jsonl"), lines("server_events.jsonl")
    reqs = replay.requests_for(pixel, server, now=time.time(), token=TOKEN)
    statuses = []
    for r in reqs:  # one at a time, each read by the worker before the next (a defined order)
        [st] = send_requests(collector.url, [r])
        statuses.append(st)
        if 200 <= st < 300:
            worker.wait_metric(
                "convstream_messages_in_total",
                sum(1 for x in statuses if 200 <= x < 300),
                timeout=30,
            )
    # every sample message is accepted; the one line that is not JSON is refused at the door
    not_json = [i for i, r in enumerate(reqs) if r.received_at is None]
    assert len(not_json) == 1
    assert [st for i, st in enumerate(statuses) if i not in not_json] == [200] * (len(reqs) - 1)
    assert statuses[not_json[0]] == 400

    # direct: `process` over the sample files as they are
    direct = offline_mod.process(
        s,
        offline_mod.ordered(
            offline_mod.read_lines("browser", s.topics.pixel_raw, b"\n".join(pixel)),
            offline_mod.read_lines("server", s.topics.server_raw, b"\n".join(server)),
        ),
        now=time.time(),
        catalog=offline_mod.load_catalog(s.topics.catalog, b"\n".join(ads), time.time(), Tally())[
            0
        ],
    )
    n_conv, n_cand = len(direct.conversions), len(direct.candidates)
    n_dead = len(direct.dead_letters) - 1  # the malformed line never reached Kafka
    assert n_conv == 5 and n_cand == 3

    conv = [
        orjson.loads(v)
        for _, v, _, _ in kafka.read(
            s, s.topics.conversions, until_count=n_conv, idle_timeout=5, max_wait=60
        )
    ]
    cand = [
        orjson.loads(v)
        for _, v, _, _ in kafka.read(
            s, s.topics.candidates, until_count=n_cand, idle_timeout=5, max_wait=60
        )
    ]
    dead = [
        orjson.loads(v)
        for _, v, _, _ in kafka.read(
            s, s.topics.dead_letter, until_count=n_dead, idle_timeout=3, max_wait=30
        )
    ]
    assert sorted(map(key, map(timeless, conv))) == sorted(
        map(key, map(timeless, direct.conversions))
    )
    assert sorted(map(key, map(timeless, cand))) == sorted(
        map(key, map(timeless, direct.candidates))
    )
    assert sorted(key(timeless(comparable_dead_letter(d))) for d in dead) == sorted(
        key(timeless(comparable_dead_letter(d)))
        for d in direct.dead_letters
        if d["errors"][0]["code"] != "malformed_message"
    )
    # event ids and conversion ids of the event_id rule do not depend on time
    assert {c["conversion_id"] for c in conv if c["dedup"]["method"] == "event_id"} == {
        c["conversion_id"] for c in direct.conversions if c["dedup"]["method"] == "event_id"
    }

    # and the worker's output is exactly `process` over what the collector wrote
    raw_pixel = b"\n".join(v for _, v, _, _ in kafka.read(s, s.topics.pixel_raw, idle_timeout=1))
    raw_server = b"\n".join(v for _, v, _, _ in kafka.read(s, s.topics.server_raw, idle_timeout=1))
    written = offline_mod.process(
        s,
        offline_mod.ordered(
            offline_mod.read_lines("browser", s.topics.pixel_raw, raw_pixel),
            offline_mod.read_lines("server", s.topics.server_raw, raw_server),
        ),
        now=time.time(),
        catalog=offline_mod.load_catalog(s.topics.catalog, b"\n".join(ads), time.time(), Tally())[
            0
        ],
    )
    assert sorted(map(key, map(without_emitted, conv))) == sorted(
        map(key, map(without_emitted, written.conversions))
    )
    # the samples' client addresses came through X-Forwarded-For from a trusted proxy
    first = orjson.loads(raw_pixel.splitlines()[0])
    assert first["ip"] == "203.0.113.7" and first["user_agent"] == "Mozilla/5.0 (X11; Linux x86_64)"
