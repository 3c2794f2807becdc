"""The streaming path and `convstream process` give the same records for the same input,
and a real worker writes no raw personal data to any topic, its log or /metrics."""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams import offline as offline_mod
from tests.helpers import DELETE, pixel_hit, server_event, server_message
from tests.integration.conftest import REPO, all_topics
from tests.unit.test_no_raw_pii import RAW, UNKNOWN_KEY_VALUE, needles, user_data

pytestmark = pytest.mark.integration
EXAMPLES = REPO / "schemas" / "examples"


def without_emitted(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in ("emitted_at", "rejected_at")}


def comparable_dead_letter(rec: dict[str, Any]) -> dict[str, Any]:
    # the offline driver addresses a line by (partition null, line number); the stream by
    # (partition, offset): compare everything else
    return {k: v for k, v in without_emitted(rec).items() if k not in ("partition", "offset")}


def run_process(
    tmp_path: Path, s: Any, pixel: Path, server: Path, *extra: str
) -> dict[str, list[Any]]:
    out = tmp_path / "offline"
    env_topics = {
        "CONVSTREAM_TOPIC_PIXEL_RAW": s.topics.pixel_raw,
        "CONVSTREAM_TOPIC_SERVER_RAW": s.topics.server_raw,
        "CONVSTREAM_TOPIC_CATALOG": s.topics.catalog,
        "PYTHONPATH": str(REPO),
        "PATH": "/usr/bin:/bin",
    }
    cmd = [sys.executable, "-m", "streams.cli", "process", "--pixel", str(pixel),
           "--server", str(server), "--out", str(out), *extra]  # fmt: skip
    proc = subprocess.run(cmd, env=env_topics, capture_output=True, text=True, check=True)
    assert "conversions" in proc.stdout
    return {
        name: [orjson.loads(x) for x in (out / f"{name}.jsonl").read_bytes().splitlines()]
        for name in ("conversions", "dead_letters", "attribution_candidates")
    }


@pytest.mark.parametrize("merge_window", [0, 5])
def test_streaming_equals_offline_process(
    make_settings, start_worker, kafka, tmp_path, merge_window
) -> None:
    # one partition: the stream sees the file order
    s = make_settings(partitions=1, merge_window=merge_window)
    kafka.create_topics(s, all_topics(s))
    pixel_file, server_file = EXAMPLES / "pixel_hits.jsonl", EXAMPLES / "server_events.jsonl"
    extra = tmp_path / "server_extra.jsonl"
    extra.write_bytes(
        server_file.read_bytes()
        + b"\n".join(
            server_message(server_event(event_id=f"p-{i}", user_data=user_data()))
            for i in range(20)
        )
        + b"\n"
    )
    catalog = EXAMPLES / "ads_catalog.jsonl"
    flags = ("--merge-window", str(merge_window), "--catalog", str(catalog))
    offline = run_process(tmp_path, s, pixel_file, extra, *flags)
    if merge_window:  # the example's browser/server pair and retry are merged
        merged = [r for r in offline["conversions"] if r["dedup"]["duplicates"] >= 2]
        assert merged and merged[0]["sources"] == ["browser", "server"]

    ads = catalog.read_bytes().splitlines()
    kafka.produce(s, s.topics.catalog, ads, keys=[orjson.loads(a)["ad_id"].encode() for a in ads])
    worker = start_worker(s)  # ready once the catalog is loaded
    # the same input order as `process`: one message at a time, in received_at order
    # (the worker reads the two raw topics independently; the order across them is
    # only defined by when messages arrive)
    lines = offline_mod.ordered(
        offline_mod.read_lines("browser", s.topics.pixel_raw, pixel_file.read_bytes()),
        offline_mod.read_lines("server", s.topics.server_raw, extra.read_bytes()),
    )
    for i, line in enumerate(lines):
        kafka.produce(s, line.topic, [line.value])
        worker.wait_metric("convstream_messages_in_total", i + 1, timeout=30)
    n_conv, n_dead = len(offline["conversions"]), len(offline["dead_letters"])
    assert n_conv > 20 and n_dead >= 2
    conv = kafka.read(s, s.topics.conversions, until_count=n_conv, idle_timeout=10, max_wait=60)
    dead = kafka.read(s, s.topics.dead_letter, until_count=n_dead, idle_timeout=10, max_wait=60)
    stream_conv = sorted(
        (without_emitted(orjson.loads(v)) for _, v, _, _ in conv), key=lambda r: r["conversion_id"]
    )
    off_conv = sorted(
        (without_emitted(r) for r in offline["conversions"]), key=lambda r: r["conversion_id"]
    )
    repeated = collections.Counter(r["conversion_id"][:8] for r in stream_conv)
    assert [k for k, n in repeated.items() if n > 1] == [], "outputs repeated"
    by_id = {r["conversion_id"]: r for r in off_conv}
    diffs = {
        r["conversion_id"][:8]: sorted(
            k for k in set(r) | set(by_id.get(r["conversion_id"], {}))
            if r.get(k) != by_id.get(r["conversion_id"], {}).get(k)
        )
        for r in stream_conv
    }
    assert {k: v for k, v in diffs.items() if v} == {}
    s_ids = sorted(r["conversion_id"] for r in stream_conv)
    missing = [
        (r["event_name"], r["event_id"], r["sources"]) for r in off_conv
        if r["conversion_id"] not in s_ids
    ]
    assert missing == [], str(missing)
    assert stream_conv == off_conv
    key = lambda r: orjson.dumps(r, option=orjson.OPT_SORT_KEYS)  # noqa: E731
    stream_dead = sorted((comparable_dead_letter(orjson.loads(v)) for _, v, _, _ in dead), key=key)
    off_dead = sorted((comparable_dead_letter(r) for r in offline["dead_letters"]), key=key)
    assert stream_dead == off_dead
    n_cand = len(offline["attribution_candidates"])
    assert n_cand >= 3 and any(c["specs"] for c in offline["attribution_candidates"])
    cand = kafka.read(s, s.topics.candidates, until_count=n_cand, idle_timeout=5, max_wait=60)
    ckey = lambda r: (r["conversion_id"], r["fbclid"])  # noqa: E731
    stream_cand = sorted((orjson.loads(v) for _, v, _, _ in cand), key=ckey)
    assert stream_cand == sorted(offline["attribution_candidates"], key=ckey)


def test_worker_writes_no_raw_pii_anywhere(make_settings, start_worker, kafka) -> None:
    s = make_settings(log_level="debug")
    kafka.create_topics(s, all_topics(s))
    worker = start_worker(s)
    server = [
        server_message(server_event(user_data=user_data())),  # valid
        server_message(server_event(user_data=user_data(), custom_data={"value": 1})),  # invalid
        server_message(server_event(user_data=user_data(), event_name=DELETE)),
        server_message(
            server_event(user_data={"em": {"x": RAW["em"][0]}, "client_user_agent": "u"})
        ),
    ]
    params = {f"ud[{k}]": v for k, (v, _) in RAW.items()}
    params["ud[mail]"] = UNKNOWN_KEY_VALUE
    pixel = [pixel_hit({**params, "eid": "px-1"}), pixel_hit({**params, "cd[currency]": "NOPE"})]
    kafka.produce(s, s.topics.server_raw, server)
    kafka.produce(s, s.topics.pixel_raw, pixel)
    worker.wait_metric("convstream_messages_in_total", len(server) + len(pixel))
    produced = []
    for topic in (s.topics.conversions, s.topics.dead_letter, s.topics.candidates):
        produced += kafka.read(s, topic, idle_timeout=3, max_wait=20)
    assert len(produced) == len(server) + len(pixel)
    metrics_text = worker.metrics()
    worker.stop()
    log_text = worker.log.read_text(errors="replace")
    assert '"level":"debug"' in log_text  # the log under test really is a debug log
    haystack = "\n".join(
        [*(((k or b"") + b" " + (v or b"")).decode(errors="replace") for k, v, _, _ in produced),
         metrics_text, log_text]
    ).lower()  # fmt: skip
    # a digits-only needle (a zip part) must stand alone: "0.04433" in a metric is a float
    leaks = [
        n for n in needles()
        if re.search(rf"(?<![0-9]){re.escape(n.lower())}(?![0-9])" if n.isdigit()
                     else re.escape(n.lower()), haystack)
    ]  # fmt: skip
    where = [haystack[max(0, haystack.find(n.lower()) - 80) :][:120] for n in leaks]
    assert not leaks, f"raw PII found: {leaks} in {where}"
