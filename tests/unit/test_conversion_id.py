"""SPEC §6 conversion_id formulas, checked against an independent computation in the
test (SHA-256 of the documented input), through ``convstream process``'s path."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from streams import offline
from streams import settings as settings_mod
from streams.pipeline import Result
from tests.helpers import pixel_hit, server_event, server_message

# SPEC §7: the convstream-only fields; the rest of a conversion is its CAPI event
CONVSTREAM_ONLY = {
    "conversion_id",
    "pixel_id",
    "sources",
    "dedup",
    "match_quality",
    "warnings",
    "received_at",
    "emitted_at",
}
FBP = "fb.1.1795300000000.123456"


def process(pixel: list[bytes], server: list[bytes], merge_window: int = 0) -> Result:
    s = settings_mod.from_env({"CONVSTREAM_MERGE_WINDOW": str(merge_window)})
    lines = offline.ordered(
        offline.read_lines("browser", s.topics.pixel_raw, b"\n".join(pixel)),
        offline.read_lines("server", s.topics.server_raw, b"\n".join(server)),
    )
    return offline.process(s, lines, 1795400100.0)


def canonical_sha256(conversion: dict[str, Any]) -> str:
    event = {k: v for k, v in conversion.items() if k not in CONVSTREAM_ONLY}
    text = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def test_event_id_rule_id_is_sha256_of_pixel_event_name_event_id() -> None:
    out = process([pixel_hit({"eid": "order-77"})], [server_message(server_event(event_id="x9"))])
    ids = sorted(c["conversion_id"] for c in out.conversions)
    expected = sorted(
        hashlib.sha256(b).hexdigest()
        for b in (b"1234567890|Purchase|order-77", b"1234567890|Purchase|x9")
    )
    assert ids == expected


def test_id_less_id_is_sha256_of_the_kept_events_canonical_json() -> None:
    server = server_message(
        server_event(event_id=None, user_data={"em": "a@b.example", "client_user_agent": "UA"})
    )
    hit = pixel_hit({"eid": "", "fbp": FBP})
    out = process([hit], [server])
    assert len(out.conversions) == 2 and all(c["event_id"] is None for c in out.conversions)
    for c in out.conversions:
        assert c["conversion_id"] == canonical_sha256(c)


def test_ids_are_stable_across_replays_and_merge_windows() -> None:
    pixel = [pixel_hit({"eid": "", "fbp": FBP}), pixel_hit({"eid": "order-5"})]
    server = [server_message(server_event(event_id=None)), server_message(server_event())]
    first = sorted(c["conversion_id"] for c in process(pixel, server).conversions)
    assert first == sorted(c["conversion_id"] for c in process(pixel, server).conversions)
    assert first == sorted(c["conversion_id"] for c in process(pixel, server, 30).conversions)
