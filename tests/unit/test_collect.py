"""The pure side of `convstream collect` (SPEC §12): request parts -> raw messages or
Graph-style errors; client address behind trusted proxies; tokens; settings."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import collect as core
from streams import offline
from streams.settings import SettingsError, from_env, to_env

PIXEL = "1234567890"


# --- settings ------------------------------------------------------------------


def test_collect_settings_defaults_and_values() -> None:
    s = from_env({})
    assert (s.collect_host, s.collect_port, s.collect_max_body) == ("127.0.0.1", 8080, 1 << 20)
    assert s.collect_tokens == frozenset()
    s = from_env(
        {
            "CONVSTREAM_COLLECT_HOST": "0.0.0.0",
            "CONVSTREAM_COLLECT_PORT": "9000",
            "CONVSTREAM_COLLECT_TOKENS": "111=tok-a, 111=tok-b,222=tok-c",
            "CONVSTREAM_COLLECT_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1,::1",
            "CONVSTREAM_COLLECT_MAX_BODY": "2048",
        }
    )
    assert s.collect_port == 9000 and s.collect_max_body == 2048
    assert s.collect_tokens == {("111", "tok-a"), ("111", "tok-b"), ("222", "tok-c")}
    assert s.collect_trusted_proxies == ("10.0.0.0/8", "127.0.0.1/32", "::1/128")
    assert from_env(to_env(s)) == s


def test_collect_tokens_stay_out_of_repr_and_errors() -> None:
    s = from_env({"CONVSTREAM_COLLECT_TOKENS": "111=hunter2secret"})
    assert "hunter2secret" not in repr(s) and "hunter2secret" not in str(s)
    with pytest.raises(SettingsError, match="CONVSTREAM_COLLECT_TOKENS: item 2") as e:
        from_env({"CONVSTREAM_COLLECT_TOKENS": "111=ok,abc=hunter2secret"})
    assert "hunter2secret" not in str(e.value)
    with pytest.raises(SettingsError, match="CONVSTREAM_COLLECT_TOKENS: item 1") as e:
        from_env({"CONVSTREAM_COLLECT_TOKENS": "hunter2secret"})
    assert "hunter2secret" not in str(e.value)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"CONVSTREAM_COLLECT_PORT": "0"}, "CONVSTREAM_COLLECT_PORT"),
        ({"CONVSTREAM_COLLECT_TRUSTED_PROXIES": "10.0.0.0/33"}, "CONVSTREAM_COLLECT_TRUSTED"),
        ({"CONVSTREAM_COLLECT_TRUSTED_PROXIES": "proxy.local"}, "CONVSTREAM_COLLECT_TRUSTED"),
        ({"CONVSTREAM_COLLECT_MAX_BODY": "big"}, "CONVSTREAM_COLLECT_MAX_BODY"),
        ({"CONVSTREAM_COLLECT_ACK_TIMEOUT": "0"}, "CONVSTREAM_COLLECT_ACK_TIMEOUT"),
    ],
)
def test_bad_collect_settings_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        from_env(env)


# --- client address -------------------------------------------------------------


def test_client_ip_untrusted_peer_ignores_forwarded_for() -> None:
    trusted = core.TrustedProxies(["10.0.0.0/8"])
    assert core.client_ip("203.0.113.7", ["198.51.100.1"], trusted) == "203.0.113.7"
    assert core.client_ip("203.0.113.7", [], core.TrustedProxies([])) == "203.0.113.7"


def test_client_ip_behind_trusted_proxies() -> None:
    trusted = core.TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
    # the rightmost address that is not a trusted proxy; a forged left part is ignored
    assert core.client_ip("10.1.1.1", ["6.6.6.6, 203.0.113.7, 10.2.2.2"], trusted) == "203.0.113.7"
    # several headers are one list
    assert core.client_ip("127.0.0.1", ["203.0.113.7", "10.0.0.5"], trusted) == "203.0.113.7"
    # only proxies: the leftmost
    assert core.client_ip("10.1.1.1", ["10.0.0.9, 10.0.0.8"], trusted) == "10.0.0.9"
    # no header: the proxy itself
    assert core.client_ip("10.1.1.1", [], trusted) == "10.1.1.1"
    # garbage stops the walk at the nearest believed hop
    assert core.client_ip("10.1.1.1", ["203.0.113.7, bogus, 10.0.0.3"], trusted) == "10.0.0.3"
    # ports and IPv6
    assert core.client_ip("10.1.1.1", ["203.0.113.7:5555"], trusted) == "203.0.113.7"
    assert core.client_ip("10.1.1.1", ["[2001:db8::1]:443"], trusted) == "2001:db8::1"
    assert core.client_ip("::ffff:10.1.1.1", ["203.0.113.9"], trusted) == "203.0.113.9"


# --- pixel hits -----------------------------------------------------------------


def test_pixel_message_keeps_the_raw_query() -> None:
    q = "id=1234567890&ev=Purchase&cd[value]=49.90&dl=https%3A%2F%2Fshop.example%2F"
    assert core.pixel_query(q, None) == q
    assert core.pixel_query("", b"id=1&ev=Lead") == "id=1&ev=Lead"
    assert core.pixel_query("id=1", b"ev=Lead\n") == "id=1&ev=Lead"
    msg = orjson.loads(core.pixel_message(1795400000.25, "203.0.113.7", "UA/1", q))
    assert msg == {
        "received_at": 1795400000.25,
        "ip": "203.0.113.7",
        "user_agent": "UA/1",
        "query": q,
    }
    assert core.pixel_key(q) == b"1234567890"
    assert core.pixel_key("ev=PageView&id=12") == b"12"
    assert core.pixel_key("ev=PageView&xid=12") is None


def test_pixel_query_errors() -> None:
    empty = core.pixel_query("", None)
    assert isinstance(empty, core.GraphError) and empty.status == 400
    bad = core.pixel_query("", b"\xff\xfe")
    assert isinstance(bad, core.GraphError) and bad.reason == "malformed"


# --- CAPI requests --------------------------------------------------------------


def event(i: int = 0) -> dict[str, object]:
    return {
        "event_name": "Purchase",
        "event_time": 1795399990,
        "event_id": f"order-{i}",
        "action_source": "website",
        "user_data": {"em": "John_Smith@Gmail.com"},
    }


def test_capi_path() -> None:
    assert core.capi_path(["v24.0", PIXEL, "events"]) == PIXEL
    assert core.capi_path([PIXEL, "events"]) == PIXEL
    assert core.capi_path(["v24.0", "notapixel", "events"]) is None
    assert core.capi_path(["24.0", PIXEL, "events"]) is None
    assert core.capi_path([PIXEL, "other"]) is None
    assert core.capi_path(["tr"]) is None


def test_capi_json_body_becomes_the_server_message() -> None:
    body = orjson.dumps(
        {"data": [event()], "test_event_code": "TEST1", "access_token": "tok", "pixel_id": "9"}
    )
    req = core.capi_request(PIXEL, body, "application/json", {})
    assert isinstance(req, core.CapiRequest)
    assert req.token == "tok" and req.events == 1
    msg = orjson.loads(core.server_message(1795400000.5, req))
    assert msg == {
        "data": [event()],
        "test_event_code": "TEST1",
        "received_at": 1795400000.5,
        "pixel_id": PIXEL,
    }
    # the server's fields lead, so `convstream process` reads the time from the start
    assert list(msg)[:2] == ["received_at", "pixel_id"]
    assert offline.read_lines("server", "s", orjson.dumps(msg))[0].received_at == 1795400000.5


def test_capi_sdk_form_body() -> None:
    """facebook-business posts form fields; data is a JSON array of JSON texts; the token
    rides in the URL query (requests session params)."""
    from urllib.parse import urlencode

    data = orjson.dumps([orjson.dumps(event(0)).decode(), orjson.dumps(event(1)).decode()])
    body = urlencode({"data": data.decode(), "test_event_code": "T2"}).encode()
    req = core.capi_request(
        PIXEL, body, "application/x-www-form-urlencoded", {"access_token": "url-tok"}
    )
    assert isinstance(req, core.CapiRequest)
    assert req.token == "url-tok"
    assert req.fields["data"] == [event(0), event(1)]
    assert req.fields["test_event_code"] == "T2"
    req = core.capi_request(PIXEL, orjson.dumps({"data": []}), "", {}, "Bearer hdr-tok")
    assert isinstance(req, core.CapiRequest) and req.token == "hdr-tok"


def test_capi_credentials_never_reach_the_message() -> None:
    body = orjson.dumps({"data": [event()], "access_token": "sek", "appsecret_proof": "prf"})
    req = core.capi_request(PIXEL, body, "application/json", {})
    assert isinstance(req, core.CapiRequest)
    out = core.server_message(1.0, req)
    assert b"sek" not in out and b"prf" not in out and b"access_token" not in out


@pytest.mark.parametrize(
    ("body", "ctype", "reason"),
    [
        (b"{not json", "application/json", "malformed"),
        (b"[1,2]", "application/json", "malformed"),
        (b'{"events": []}', "application/json", "bad_data"),
        (b'{"data": {"a": 1}}', "application/json", "bad_data"),
        (b"data=%5Bnot", "application/x-www-form-urlencoded", "bad_data"),
        (b'{"data": [], "test_event_code": 5}', "application/json", "bad_data"),
        (b"\xff\xfe=1", "application/x-www-form-urlencoded", "malformed"),
    ],
)
def test_capi_malformed_bodies(body: bytes, ctype: str, reason: str) -> None:
    err = core.capi_request(PIXEL, body, ctype, {})
    assert isinstance(err, core.GraphError)
    assert (err.status, err.code, err.reason) == (400, 100, reason)
    graph = orjson.loads(err.body("trace1"))["error"]
    assert graph["code"] == 100 and graph["fbtrace_id"] == "trace1" and graph["message"]


def test_capi_1000_events_limit() -> None:
    ok = core.capi_request(PIXEL, orjson.dumps({"data": [event(i) for i in range(1000)]}), "", {})
    assert isinstance(ok, core.CapiRequest) and ok.events == 1000
    err = core.capi_request(PIXEL, orjson.dumps({"data": [event(i) for i in range(1001)]}), "", {})
    assert isinstance(err, core.GraphError)
    assert (err.status, err.reason) == (400, "too_many_events")
    assert "1000" in err.message


def test_tokens() -> None:
    table = core.token_table([("111", "a"), ("111", "b"), ("222", "c")])
    assert core.token_ok(table, "111", "a") and core.token_ok(table, "111", "b")
    assert not core.token_ok(table, "111", "c")
    assert not core.token_ok(table, "333", "a")
    assert not core.token_ok(table, "111", None)
    assert not core.token_ok({}, "111", "a")  # none configured: everything is refused
    err = core.bad_token()
    assert err.status == 401 and orjson.loads(err.body("t"))["error"]["code"] == 190


def test_unavailable_is_transient_with_retry_after() -> None:
    err = core.unavailable("kafka_timeout", 2)
    assert err.status == 503 and err.retry_after == 2
    assert orjson.loads(err.body("t"))["error"]["is_transient"] is True


# --- never raises on any input ------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda v: json.dumps(v).encode(),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c),
                max_leaves=12,
            ),
        ),
        st.builds(
            lambda d: json.dumps({"data": d}).encode(),
            st.lists(st.one_of(st.text(max_size=20), st.integers(), st.none()), max_size=5),
        ),
    ),
    ctype=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "", "x/y"]),
    query=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    auth=st.one_of(st.none(), st.text(max_size=20)),
)
def test_capi_request_never_raises(
    body: bytes, ctype: str, query: dict[str, str], auth: str | None
) -> None:
    got = core.capi_request(PIXEL, body, ctype, query, auth)
    assert isinstance(got, core.CapiRequest | core.GraphError)
    if isinstance(got, core.CapiRequest):
        out = orjson.loads(core.server_message(1.0, got))
        assert out["pixel_id"] == PIXEL and isinstance(out["data"], list)
        assert "access_token" not in out


@settings(max_examples=300, deadline=None)
@given(
    peer=st.one_of(st.none(), st.text(max_size=20), st.ip_addresses().map(str)),
    xff=st.lists(st.one_of(st.text(max_size=30), st.ip_addresses().map(str)), max_size=3),
    url_query=st.text(max_size=40),
    body=st.one_of(st.none(), st.binary(max_size=60)),
)
def test_pixel_parts_never_raise(
    peer: str | None, xff: list[str], url_query: str, body: bytes | None
) -> None:
    trusted = core.TrustedProxies(["0.0.0.0/0", "::/0"])
    ip = core.client_ip(peer, xff, trusted)
    assert ip is None or isinstance(ip, str)
    q = core.pixel_query(url_query, body)
    if isinstance(q, str):
        orjson.loads(core.pixel_message(1.0, ip, "ua", q))
        core.pixel_key(q)
