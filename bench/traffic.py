"""Synthetic raw traffic for the benchmarks: realistic pixel hits and CAPI bodies with
raw PII, a share of browser/server duplicates and of invalid events. Deterministic."""

from __future__ import annotations

import random
from urllib.parse import urlencode

import orjson

BASE = 1795400000.0
UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/142.0 Safari/537.36"
)
EVENTS = ("Purchase", "AddToCart", "Lead", "ViewContent", "InitiateCheckout", "PageView")


def server_event(i: int, rng: random.Random, received_at: float) -> dict[str, object]:
    name = EVENTS[i % len(EVENTS)]
    ev: dict[str, object] = {
        "event_name": name,
        "event_time": int(received_at) - rng.randint(1, 3600),
        "event_id": f"ev-{i}",
        "action_source": "website",
        "event_source_url": f"https://shop.example/p/{i % 500}?fbclid=IwAR{i % 997}",
        "user_data": {
            "em": f"Buyer.{i}@Example.org ",
            "ph": f"+1 (650) 555-{i % 10000:04d}",
            "fn": "Mary",
            "ln": "O'Connor",
            "ct": "Menlo Park",
            "st": "California",
            "zp": "94035-1234",
            "country": "US",
            "external_id": f"crm-{i}",
            "client_user_agent": UA,
            "client_ip_address": f"203.0.{i % 256}.{i % 200}",
            "fbp": f"fb.1.1795300000000.{i}",
            "fbc": f"fb.1.1795390000000.IwAR{i % 997}",
        },
        "custom_data": {"value": round(rng.uniform(1, 300), 2), "currency": "eur"},
    }
    if rng.random() < 0.03:  # an invalid event now and then
        ev["custom_data"] = {"value": 10}
        ev["event_name"] = "Purchase"
    return ev


def server_message(i: int, rng: random.Random, events: int = 1) -> bytes:
    received_at = BASE + i / 1000
    data = [server_event(i * 10 + j, rng, received_at) for j in range(events)]
    return orjson.dumps({"received_at": received_at, "pixel_id": "1234567890", "data": data})


def pixel_hit(i: int, rng: random.Random) -> bytes:
    params = {
        "id": "1234567890",
        "ev": EVENTS[i % len(EVENTS)],
        "eid": f"ev-{i}",
        "dl": f"https://shop.example/p/{i % 500}?fbclid=IwAR{i % 997}&utm_campaign=c{i % 7}",
        "ts": str(int((BASE + i / 1000) * 1000)),
        "cd[value]": f"{rng.uniform(1, 300):.2f}",
        "cd[currency]": "EUR",
        "fbp": f"fb.1.1795300000000.{i}",
        "ud[em]": "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",
    }
    if i % 20 == 0:
        params["ev"] = "Microdata"
    return orjson.dumps(
        {
            "received_at": BASE + i / 1000,
            "ip": "203.0.113.7",
            "user_agent": UA,
            "query": urlencode(params),
        }
    )


def mixed(n: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """n messages: ~40% pixel hits, ~60% server bodies of 1-3 events."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        if rng.random() < 0.4:
            out.append(("browser", pixel_hit(i, rng)))
        else:
            out.append(("server", server_message(i, rng, events=rng.choice((1, 1, 2, 3)))))
    return out


PIXELS = ("1234567890", "2222222222")


def conversions(n: int, seed: int = 7) -> list[dict[str, object]]:
    """About ``n`` conversions (conversions.enriched values) from ``mixed`` traffic run
    through the offline pipeline; every third moved to a second pixel and every fifth
    given a test_event_code, so batches per (pixel, test_event_code) are exercised."""
    from streams.offline import Line, ordered, process
    from streams.settings import Settings

    msgs = mixed(int(n / 1.1) + 1, seed)
    lines = {
        s: [
            Line(s, f"events.{'pixel' if s == 'browser' else 'server'}.raw", i, v)  # type: ignore[arg-type]
            for i, (src, v) in enumerate(msgs)
            if src == s
        ]
        for s in ("browser", "server")
    }
    out = process(Settings(), ordered(lines["browser"], lines["server"]), now=BASE + 3600)
    convs: list[dict[str, object]] = []
    for i, rec in enumerate(out.conversions[:n]):
        rec = dict(rec)
        if i % 3 == 2:
            rec["pixel_id"] = PIXELS[1]
        if i % 5 == 4:
            rec["test_event_code"] = "TEST42"
        convs.append(rec)
    return convs
