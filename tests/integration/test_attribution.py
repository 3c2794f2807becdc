"""SPEC §8/§9 on a real broker: candidates from fbc and landing hits, the global ads
catalog (loaded before the worker is ready; updates, tombstones and malformed records),
out-of-order landing, and clicks outside the 28-day window."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest

from tests.helpers import RECEIVED_AT, pixel_hit, server_event, server_message
from tests.integration.conftest import REPO, all_topics, send_in_order

pytestmark = pytest.mark.integration
CLICK_ID = "IwAR-CaseSensitive"
AD = json.loads((REPO / "schemas" / "examples" / "ad.json").read_text())  # ad 23851: PURCHASE
T = RECEIVED_AT


def landing_hit(fbclid: str, t: float, *, ad_id: str = "23851") -> bytes:
    url = f"https://shop.example/?fbclid={fbclid}&utm_campaign=winter&ad_id={ad_id}"
    params = {"ev": "PageView", "dl": url, "ts": str(int(t * 1000))}
    hit = orjson.loads(pixel_hit(params))
    hit["received_at"] = t
    hit["query"] = "&".join(p for p in hit["query"].split("&") if not p.startswith("eid="))
    return orjson.dumps(hit)


def purchase(eid: str, t: float, fbc: str) -> bytes:
    ev = server_event(event_id=eid, event_time=int(t) - 1)
    ev["user_data"]["fbc"] = fbc
    return server_message(ev, received_at=t)


def fbc(fbclid: str, click: float) -> str:
    return f"fb.1.{int(click * 1000)}.{fbclid}"


def candidates(kafka: Any, s: Any, expect: int) -> list[dict[str, Any]]:
    got = kafka.read(s, s.topics.candidates, until_count=expect, idle_timeout=4, max_wait=60)
    return [orjson.loads(v) for _, v, _, _ in got]


def set_catalog(kafka: Any, s: Any, worker: Any, records: list[tuple[str, Any]], ads: int) -> None:
    """Produce catalog records (None = tombstone), wait until the worker holds ``ads``."""
    values = [None if v is None else orjson.dumps(v) for _, v in records]
    kafka.produce(s, s.topics.catalog, values, keys=[k.encode() for k, _ in records])
    deadline = time.time() + 30
    while worker.metric("convstream_catalog_ads") != ads and time.time() < deadline:
        time.sleep(0.2)
    assert worker.metric("convstream_catalog_ads") == ads


def test_candidates_with_landing_and_catalog(make_settings, start_worker, kafka) -> None:
    s = make_settings(partitions=2)
    kafka.create_topics(s, [s.topics.catalog], partitions=1)  # one partition: ordered updates
    kafka.create_topics(s, all_topics(s))
    kafka.produce(
        s, s.topics.catalog, [orjson.dumps(AD), b'{"ad_id": "999"}'], keys=[b"23851", b"999"]
    )
    w = start_worker(s)  # ready only once the catalog present at start is loaded
    assert w.metric("convstream_catalog_ads") == 1
    dead = [orjson.loads(v) for _, v, _, _ in kafka.read(s, s.topics.dead_letter, until_count=1)]
    assert [(d["source_topic"], d["errors"][0]["code"], d["errors"][0]["field"]) for d in dead] == [
        (s.topics.catalog, "invalid_ad", "objective")
    ]

    click = T - 50_000
    send_in_order(kafka, s, w, [
        ("browser", landing_hit("IwAR-CaseSensitive", click)),
        ("server", purchase("a-1", T, fbc("IwAR-CaseSensitive", click - 2))),
    ])  # fmt: skip
    got = candidates(kafka, s, 2)
    by_event = {c["event_name"]: c for c in got}
    assert set(by_event) == {"PageView", "Purchase"}
    buy = by_event["Purchase"]
    assert buy["fbclid"] == "IwAR-CaseSensitive"
    assert buy["click_time"] == int(click) - 2  # from the fbc (ms -> s)
    assert buy["lag_seconds"] == int(T) - 1 - (int(click) - 2)
    assert buy["windows"] == ["1d_click", "7d_click", "28d_click"]
    assert buy["landing"]["ad_id"] == "23851" and buy["landing"]["utm"] == {"campaign": "winter"}
    assert buy["specs"] == {"ad_id": "23851", "conversion_spec": True, "tracking_specs": [2]}

    # an update takes effect: the ad now optimizes for leads
    lead_ad = {**AD, "promoted_object": {**AD["promoted_object"], "custom_event_type": "LEAD"}}
    set_catalog(kafka, s, w, [("23851", lead_ad), ("777", {**AD, "ad_id": "777"})], ads=2)
    send_in_order(kafka, s, w, [("server", purchase("a-2", T + 1, fbc(CLICK_ID, click)))])
    a2 = [c for c in candidates(kafka, s, 3) if c["conversion_id"] not in {buy["conversion_id"]}]
    a2 = [c for c in a2 if c["event_name"] == "Purchase"]
    assert [c["specs"]["conversion_spec"] for c in a2] == [False]

    # a tombstone deletes it: the landing still names ad 23851, but no specs
    set_catalog(kafka, s, w, [("23851", None), ("778", {**AD, "ad_id": "778"}),
                              ("779", {**AD, "ad_id": "779"})], ads=3)  # fmt: skip
    send_in_order(kafka, s, w, [("server", purchase("a-3", T + 2, fbc(CLICK_ID, click)))])
    got = candidates(kafka, s, 4)
    assert len(got) == 4
    a3 = [c for c in got if c["event_time"] == int(T + 2) - 1]
    assert [(c["landing"]["ad_id"], c["specs"]) for c in a3] == [("23851", None)]
    assert w.metric("convstream_attribution_spec_lookups_total", result="unknown_ad") == 1

    # out of order: the conversion comes before its landing hit -> a candidate without
    # landing (click time from the fbc), not re-emitted when the landing arrives
    send_in_order(kafka, s, w, [
        ("server", purchase("b-1", T + 10, fbc("IwAR-Late", T - 100))),
        ("browser", landing_hit("IwAR-Late", T + 20)),
        # a click 30 days before the conversion: no candidate
        ("server", purchase("c-1", T + 30, fbc("IwAR-Old", T - 30 * 86_400))),
    ])  # fmt: skip
    got = candidates(kafka, s, 6)
    late = [c for c in got if c["fbclid"] == "IwAR-Late"]
    assert sorted((c["event_name"], c["landing"] is None) for c in late) == [
        ("PageView", False),
        ("Purchase", True),
    ]
    assert not [c for c in got if c["fbclid"] == "IwAR-Old"]
    # c-1 makes no candidate: its count may come in a batch after the last candidate's
    w.wait_metric("convstream_attribution_out_of_window_total", 1, timeout=30, reason="too_old")
    assert w.metric("convstream_attribution_out_of_window_total", reason="too_old") == 1
    assert w.metric("convstream_attribution_conversions_total", evidence="with") == 7
    assert w.metric("convstream_attribution_landing_stored_total") == 2
    assert len(got) == 6

    # the worker writes conversions.enriched and never reads it back: foreign records
    # there change nothing (the route is part of the dedup stage)
    foreign = {"conversion_id": "x", "pixel_id": "abc", "event_name": "Purchase",
               "event_time": "soon", "user_data": {"fbc": fbc("IwAR-Foreign", T)}}  # fmt: skip
    kafka.produce(s, s.topics.conversions, [b"not json", orjson.dumps(foreign)])
    send_in_order(kafka, s, w, [("server", purchase("d-1", T + 40, fbc(CLICK_ID, click)))])
    got = candidates(kafka, s, 7)
    assert len(got) == 7 and not [c for c in got if c["fbclid"] == "IwAR-Foreign"]
    assert w.metric("convstream_attribution_conversions_total", evidence="with") == 8
