"""Synthetic raw traffic for the benchmarks: realistic pixel hits and CAPI bodies with
raw PII, a share of browser/server duplicates and of invalid events. Deterministic."""

from __future__ import annotations

import random
from urllib.parse import parse_qsl, urlencode

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


def event_ids(value: bytes) -> list[str]:
    """The event ids of one raw message (a pixel hit's ``eid``, a body's ``event_id``s)."""
    msg = orjson.loads(value)
    if "query" in msg:
        return [v for k, v in parse_qsl(msg["query"]) if k == "eid"]
    return [e["event_id"] for e in msg.get("data", ()) if e.get("event_id")]


def mixed(n: int, seed: int = 7, start: int = 0) -> list[tuple[str, bytes]]:
    """n messages: ~40% pixel hits, ~60% server bodies of 1-3 events (numbered from
    ``start``: another start gives other event ids)."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes]] = []
    for i in range(start, start + n):
        if rng.random() < 0.4:
            out.append(("browser", pixel_hit(i, rng)))
        else:
            out.append(("server", server_message(i, rng, events=rng.choice((1, 1, 2, 3)))))
    return out


def _pixel_line(
    i: int,
    rng: random.Random,
    received_at: float,
    *,
    ev: str,
    eid: str | None,
    dl: str,
    fbp: str,
    em: str | None,
) -> bytes:
    params = {"id": "1234567890", "ev": ev}
    if eid is not None:
        params["eid"] = eid
    params["dl"] = dl
    params["ts"] = str(int(received_at * 1000) - rng.randint(0, 900))
    if ev == "Purchase":
        params["cd[value]"] = f"{rng.uniform(1, 300):.2f}"
        params["cd[currency]"] = "EUR"
    params["fbp"] = fbp
    if em is not None:
        params["ud[em]"] = em
    return orjson.dumps(
        {
            "received_at": received_at,
            "ip": f"203.0.{i % 256}.{i % 200}",
            "user_agent": UA,
            "query": urlencode(params),
        }
    )


def _server_body(received_at: float, events: list[dict[str, object]]) -> bytes:
    return orjson.dumps({"received_at": received_at, "pixel_id": "1234567890", "data": events})


def offline_files(n: int, seed: int = 11) -> tuple[list[bytes], list[bytes]]:
    """About ``n`` raw messages as ``convstream process`` reads them: (pixel file lines,
    server file lines), each file in received_at order. Shares of journeys, per 100:

    - 30 browser/server pairs with the same event id (the server copy a few s later),
    - 10 browser hits whose server copy has no event id (deduped by fbp),
    - 10 server-only events (a CRM; external_id, phone), 8 browser-only conversions,
    - 22 landing hits (PageView with fbclid and utm_*/ad_id in the URL),
    - 5 server retries (the same body sent again), 4 Microdata hits,
    - 8 server bodies of 2-3 events, 3 invalid events (Purchase without currency or with
      an event_time from last month), and a malformed line now and then.
    """
    rng = random.Random(seed)
    pixel: list[tuple[float, bytes]] = []
    server: list[tuple[float, bytes]] = []
    count = 0
    i = 0
    while count < n:
        i += 1
        t = BASE + i * 0.05
        click = f"IwAR{rng.randrange(5000)}"
        dl = f"https://shop.example/p/{i % 500}?fbclid={click}&utm_campaign=c{i % 7}"
        fbp = f"fb.1.1795300000000.{rng.randrange(10**9)}"
        name = EVENTS[rng.randrange(5)]  # a conversion, not PageView
        ev = server_event(i, rng, t)
        ud = ev["user_data"]
        assert isinstance(ud, dict)
        ud["fbp"] = fbp
        ud["fbc"] = f"fb.1.{int(t * 1000) - rng.randint(10**5, 10**9)}.{click}"
        ev["event_name"] = ev["event_name"] if ev["event_name"] == "Purchase" else name
        ev["event_source_url"] = dl
        r = rng.randrange(100)
        if r < 30:  # a pair by event id
            eid = str(ev["event_id"])
            pixel.append(
                (
                    t,
                    _pixel_line(
                        i, rng, t, ev=str(ev["event_name"]), eid=eid, dl=dl, fbp=fbp, em=_hex(rng)
                    ),
                )
            )
            later = t + rng.uniform(0.5, 5)
            server.append((later, _server_body(later, [ev])))
            count += 2
        elif r < 40:  # server copy without event id: the fbp rule
            pixel.append(
                (
                    t,
                    _pixel_line(
                        i, rng, t, ev=str(ev["event_name"]), eid=None, dl=dl, fbp=fbp, em=None
                    ),
                )
            )
            del ev["event_id"]
            server.append((t + 2, _server_body(t + 2, [ev])))
            count += 2
        elif r < 50:  # server only, no click
            ud.pop("fbc")
            ud.pop("fbp")
            ev["event_source_url"] = f"https://shop.example/p/{i % 500}"
            server.append((t, _server_body(t, [ev])))
            count += 1
        elif r < 58:  # browser only
            pixel.append(
                (t, _pixel_line(i, rng, t, ev=name, eid=f"b-{i}", dl=dl, fbp=fbp, em=_hex(rng)))
            )
            count += 1
        elif r < 80:  # landing hit
            land = f"{dl}&ad_id=2385{i % 40}&utm_source=facebook"
            pixel.append(
                (t, _pixel_line(i, rng, t, ev="PageView", eid=None, dl=land, fbp=fbp, em=None))
            )
            count += 1
        elif r < 85:  # a retried server body
            server.append((t, _server_body(t, [ev])))
            server.append((t + 30, _server_body(t + 30, [ev])))
            count += 2
        elif r < 89:  # Microdata
            pixel.append(
                (t, _pixel_line(i, rng, t, ev="Microdata", eid=None, dl=dl, fbp=fbp, em=None))
            )
            count += 1
        elif r < 97:  # a batch of 2-3 events
            batch = [ev] + [server_event(i * 10 + j, rng, t) for j in range(rng.choice((1, 2)))]
            server.append((t, _server_body(t, batch)))
            count += 1
        else:  # invalid
            if r == 97:
                ev["event_name"] = "Purchase"
                ev["custom_data"] = {"value": 10}
            else:
                ev["event_time"] = int(t) - 40 * 86_400
            server.append((t, _server_body(t, [ev])))
            count += 1
        if i % 997 == 0:
            server.append((t, b'{"received_at": ' + str(t).encode() + b', "data": '))
            count += 1
    pixel.sort(key=lambda p: p[0])
    server.sort(key=lambda p: p[0])
    return [v for _, v in pixel], [v for _, v in server]


def _hex(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def catalog_lines(ads: int = 40) -> list[bytes]:
    """An ``ads.catalog`` file for the ad ids the landing hits of offline_files carry."""
    goals = ("PURCHASE", "LEAD", "ADD_TO_CART")
    return [
        orjson.dumps(
            {
                "ad_id": f"2385{a}",
                "objective": "CONVERSIONS",
                "optimization_goal": "OFFSITE_CONVERSIONS",
                "billing_event": "IMPRESSIONS",
                "creative_type": "PAGE_POST_LINK",
                "promoted_object": {
                    "pixel_id": "1234567890",
                    "custom_event_type": goals[a % len(goals)],
                    "page_id": "222",
                },
                "creative": {"object_story_id": "222_333"},
                "tracking_specs": [
                    {"action.type": "offsite_conversion", "fb_pixel": ["1234567890"]}
                ],
            }
        )
        for a in range(ads)
    ]


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
