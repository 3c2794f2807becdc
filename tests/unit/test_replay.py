"""streams.replay: recorded raw messages back into Pixel / SDK requests, times moved
together so every difference the pipeline looks at stays the same."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import orjson

from streams import replay


def hit(received_at: float, **q: str) -> bytes:
    query = "&".join(f"{k}={v}" for k, v in q.items())
    return orjson.dumps({"received_at": received_at, "ip": "203.0.113.7", "user_agent": "UA/1",
                         "query": query})  # fmt: skip


def test_times_move_together_and_order_is_received_at() -> None:
    pixel = [
        hit(1000.0, id="1", ev="PageView", ts="0999000000000", fbp="fb.1.0999000000000.42"),
        hit(2000.0, id="1", ev="Purchase", ts="1999500000000"),
    ]
    server = [
        orjson.dumps(
            {
                "received_at": 1500.0,
                "pixel_id": "1",
                "test_event_code": "T",
                "data": [
                    {
                        "event_name": "Lead",
                        "event_time": 1490,
                        "user_data": {"fbc": "fb.1.0001400000000.Ab"},
                    },
                    {"event_name": "Lead", "event_time": 1491000},
                ],
            }
        ),
        orjson.dumps({"received_at": 2000.0, "pixel_id": "1", "data": []}),
        b"not json",
    ]
    reqs = replay.requests_for(pixel, server, now=12_000.0, token="tok")
    assert [r.received_at for r in reqs] == [1000.0, 1500.0, 2000.0, 2000.0, None]
    assert [r.source for r in reqs] == ["browser", "server", "browser", "server", "server"]
    delta = 10_000  # now - latest received_at
    first = reqs[0]
    assert first.method == "GET" and first.path.startswith("/tr?")
    q = parse_qs(urlsplit(first.path).query)
    assert q["ts"] == [str(999_000_000_000 + delta * 1000)]
    assert q["fbp"] == [f"fb.1.{999_000_000_000 + delta * 1000}.42"]
    assert first.headers == {"User-Agent": "UA/1", "X-Forwarded-For": "203.0.113.7"}
    capi = reqs[1]
    assert capi.method == "POST" and capi.path == "/v24.0/1/events"
    body = orjson.loads(capi.body)
    assert set(body) == {"data", "test_event_code", "access_token"}  # no received_at/pixel_id
    assert body["access_token"] == "tok"
    assert body["data"][0]["event_time"] == 1490 + delta
    assert body["data"][0]["user_data"]["fbc"] == f"fb.1.{1_400_000_000 + delta * 1000}.Ab"
    assert body["data"][1]["event_time"] == 1491000 + delta  # not 13 digits: seconds
    assert reqs[-1].body == b"not json"


def test_millisecond_event_time_and_params_hits() -> None:
    event = {"event_name": "X", "event_time": 1_795_399_990_000}
    server = [orjson.dumps({"received_at": 100.0, "pixel_id": "7", "data": [event]})]
    params = {"id": "7", "ev": "Lead", "ts": "1795399990000"}
    pixel = [orjson.dumps({"received_at": 50.0, "params": params})]
    reqs = replay.requests_for(pixel, server, now=200.0, token="t")
    body = orjson.loads(reqs[1].body)
    assert body["data"][0]["event_time"] == 1_795_399_990_000 + 100_000
    assert parse_qs(urlsplit(reqs[0].path).query) == {
        "id": ["7"],
        "ev": ["Lead"],
        "ts": [str(1_795_399_990_000 + 100_000)],
    }
