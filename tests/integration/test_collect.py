"""`convstream collect` on a real broker (SPEC §12): the official SDK and a headless
Chromium as clients, the raw messages it writes, its refusals, and the fuzzed server."""

from __future__ import annotations

import http.server
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams import collect as core
from tests.integration.collect_helpers import (
    PIXEL,
    TOKEN,
    CollectorProc,
    collector_settings,
    request,
)
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

RAW_EMAIL = "Raw.Person+collect@Example.org"


@pytest.fixture
def collector(make_settings: Any, kafka: Any, start_collector: Any) -> CollectorProc:
    s = collector_settings(make_settings(), collect_max_body=64 * 1024)
    kafka.create_topics(s, [s.topics.pixel_raw, s.topics.server_raw])
    return start_collector(s)


def read_values(kafka: Any, c: CollectorProc, topic: str, n: int) -> list[dict[str, Any]]:
    got = kafka.read(c.settings, topic, until_count=n, idle_timeout=3, max_wait=30)
    return [orjson.loads(v) for _, v, _, _ in got]


def capi_event(event_id: str) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_time": int(time.time()) - 5,
        "event_id": event_id,
        "action_source": "website",
        "event_source_url": "https://shop.example/thanks",
        "user_data": {"em": RAW_EMAIL, "client_user_agent": "UA/1"},
        "custom_data": {"value": 1.5, "currency": "EUR"},
    }


# --- the official SDK ----------------------------------------------------------------


def test_facebook_business_sdk_event_request(collector: CollectorProc, kafka: Any) -> None:
    from facebook_business.adobjects.serverside.action_source import ActionSource
    from facebook_business.adobjects.serverside.custom_data import CustomData
    from facebook_business.adobjects.serverside.event import Event
    from facebook_business.adobjects.serverside.event_request import EventRequest
    from facebook_business.adobjects.serverside.user_data import UserData
    from facebook_business.api import FacebookAdsApi
    from facebook_business.exceptions import FacebookRequestError
    from facebook_business.session import FacebookSession

    def sdk(token: str) -> None:
        # the SDK builds <session.GRAPH>/<api_version>/<pixel_id>/events; point it here
        session = FacebookSession(access_token=token, app_secret="app-secret-xyz")
        session.GRAPH = collector.url
        FacebookAdsApi.set_default_api(FacebookAdsApi(session, api_version="v24.0"))

    sdk(TOKEN)
    events = [
        Event(
            event_name="Purchase",
            event_time=int(time.time()) - 10,
            event_id=f"sdk-{i}",
            action_source=ActionSource.WEBSITE,
            event_source_url="https://shop.example/thanks",
            user_data=UserData(email=RAW_EMAIL, client_user_agent="UA/sdk", fbp="fb.1.1.2"),
            custom_data=CustomData(value=12.5 + i, currency="eur"),
        )
        for i in range(3)
    ]
    resp = EventRequest(pixel_id=PIXEL, events=events, test_event_code="TEST42").execute()
    assert resp.events_received == 3
    assert resp.messages == [] and resp.fbtrace_id

    [msg] = read_values(kafka, collector, collector.settings.topics.server_raw, 1)
    assert msg["pixel_id"] == PIXEL and msg["test_event_code"] == "TEST42"
    assert abs(msg["received_at"] - time.time()) < 60
    assert [e["event_id"] for e in msg["data"]] == ["sdk-0", "sdk-1", "sdk-2"]
    assert msg["data"][0]["event_name"] == "Purchase"
    assert msg["data"][0]["custom_data"] == {"value": 12.5, "currency": "eur"}
    assert msg["data"][0]["user_data"]["client_user_agent"] == "UA/sdk"
    raw = orjson.dumps(msg)
    # the SDK hashes em itself; the token and the appsecret_proof are never written
    assert RAW_EMAIL.encode() not in raw and RAW_EMAIL.lower().encode() not in raw
    assert TOKEN.encode() not in raw and b"access_token" not in raw
    assert b"appsecret_proof" not in raw

    # a wrong token: a Graph-style 401 the SDK understands (code 190); nothing written
    sdk("wrong-token")
    with pytest.raises(FacebookRequestError) as e:
        EventRequest(pixel_id=PIXEL, events=events[:1]).execute()
    assert e.value.http_status() == 401 and e.value.api_error_code() == 190
    everything = kafka.read(
        collector.settings, collector.settings.topics.server_raw, idle_timeout=1, max_wait=5
    )
    assert len(everything) == 1


# --- pixel hits ------------------------------------------------------------------


def test_pixel_get_post_multipart_and_privacy_sandbox(collector: CollectorProc, kafka: Any) -> None:
    u = collector.url
    q = (
        f"id={PIXEL}&ev=Purchase&eid=px-1&dl=https%3A%2F%2Fshop.example%2Fthanks"
        "&cd[value]=49.90&cd[currency]=EUR&ud[em]=62a14e44f765419d10fea99367361a727c12365e"
        "2520f32218d505ed9aa0f62f"
    )
    status, headers, body = request(
        f"{u}/tr?{q}", headers={"User-Agent": "UA/get", "X-Forwarded-For": "6.6.6.6, 203.0.113.7"}
    )
    assert status == 200 and headers["Content-Type"] == "image/gif" and body == core.GIF
    status, _, _ = request(
        f"{u}/tr/",
        method="POST",
        body=f"id={PIXEL}&ev=Lead&eid=px-2".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "UA/post"},
    )
    assert status == 204
    boundary = "----convstream"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="id"\r\n\r\n{PIXEL}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="ev"\r\n\r\nAddToCart\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="eid"\r\n\r\npx-3\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    status, _, _ = request(
        f"{u}/tr",
        method="POST",
        body=multipart,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert status == 204
    # the browser's second copy: counted, not written
    status, _, _ = request(f"{u}/privacy_sandbox/pixel/register/trigger/?{q}")
    assert status == 200
    assert collector.metric("convstream_collect_privacy_sandbox_hits_total") == 1

    msgs = read_values(kafka, collector, collector.settings.topics.pixel_raw, 3)
    by_eid = {m["query"].split("eid=")[1].split("&")[0]: m for m in msgs}
    assert set(by_eid) == {"px-1", "px-2", "px-3"}
    get = by_eid["px-1"]
    assert get["query"] == q  # the raw query, byte for byte
    assert get["ip"] == "203.0.113.7"  # first untrusted hop (the peer 127.0.0.1 is trusted)
    assert get["user_agent"] == "UA/get"
    assert abs(get["received_at"] - time.time()) < 60
    assert by_eid["px-2"]["query"] == f"id={PIXEL}&ev=Lead&eid=px-2"
    assert by_eid["px-2"]["ip"] == "127.0.0.1" and by_eid["px-2"]["user_agent"] == "UA/post"
    assert by_eid["px-3"]["query"] == f"id={PIXEL}&ev=AddToCart&eid=px-3"
    # nothing more (the sandbox copy was not written)
    assert (
        len(
            kafka.read(
                collector.settings, collector.settings.topics.pixel_raw, idle_timeout=1, max_wait=5
            )
        )
        == 3
    )
    assert collector.metric("convstream_collect_messages_total", source="browser") == 3


# --- refusals --------------------------------------------------------------------


def test_refusals_are_graph_errors_and_write_nothing(collector: CollectorProc, kafka: Any) -> None:
    u = collector.url
    events_url = f"{u}/v24.0/{PIXEL}/events"
    js = {"Content-Type": "application/json"}

    def post(body: dict[str, Any], url: str = events_url) -> tuple[int, dict[str, Any]]:
        status, _, raw = request(url, method="POST", body=orjson.dumps(body), headers=js)
        return status, orjson.loads(raw)

    one = [capi_event("ok-1")]
    # tokens: missing, wrong, another pixel's, configured for nobody
    for body, url in (
        ({"data": one}, events_url),
        ({"data": one, "access_token": "nope"}, events_url),
        ({"data": one, "access_token": TOKEN}, f"{u}/v24.0/999/events"),
    ):
        status, err = post(body, url)
        assert status == 401 and err["error"]["code"] == 190 and err["error"]["fbtrace_id"]
    # > 1000 events
    status, err = post({"data": [{"event_name": "Lead"}] * 1001, "access_token": TOKEN})
    assert status == 400 and err["error"]["code"] == 100 and "1000" in err["error"]["message"]
    # oversized body (the fixture's limit is 64 KiB), with and without Content-Length
    big = orjson.dumps({"data": one, "access_token": TOKEN, "pad": "x" * 70_000})
    status, _, raw = request(events_url, method="POST", body=big, headers=js)
    assert status == 413 and orjson.loads(raw)["error"]["code"] == 100

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 10_000

    import urllib.request

    req = urllib.request.Request(f"{u}/tr", data=chunks(), method="POST")
    req.add_header("Transfer-Encoding", "chunked")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
        assert orjson.loads(raw)["error"]["code"] == 100
    assert status == 413
    # not JSON, no data, unknown path, wrong method, empty hit
    status, _, raw = request(events_url, method="POST", body=b"{nope", headers=js)
    assert status == 400 and orjson.loads(raw)["error"]["type"] == "GraphMethodException"
    assert post({"access_token": TOKEN})[0] == 400
    assert request(f"{u}/v24.0/{PIXEL}/nothing", method="POST", body=b"{}")[0] == 404
    assert request(events_url)[0] == 405
    assert request(f"{u}/tr")[0] == 400
    # a good one still goes through, and it is the only message written
    status, ok = post({"data": one, "access_token": TOKEN})
    assert status == 200 and ok["events_received"] == 1
    got = kafka.read(
        collector.settings, collector.settings.topics.server_raw, idle_timeout=2, max_wait=10
    )
    assert len(got) == 1 and orjson.loads(got[0][1])["data"][0]["event_id"] == "ok-1"
    assert (
        kafka.read(
            collector.settings, collector.settings.topics.pixel_raw, idle_timeout=1, max_wait=3
        )
        == []
    )
    assert collector.metric("convstream_collect_rejected_total", reason="bad_token") == 3
    assert collector.metric("convstream_collect_rejected_total", reason="too_many_events") == 1
    assert collector.metric("convstream_collect_rejected_total", reason="too_large") == 2


def test_fuzzed_requests_never_break_the_collector(collector: CollectorProc, kafka: Any) -> None:
    """Random methods, paths, headers, bodies and raw garbage on the socket: the server
    answers (or drops the connection) and keeps serving; no raw PII or token in its log
    or metrics."""
    rnd = random.Random(13)
    host, port = collector.settings.collect_host, collector.settings.collect_port
    pii = f"fuzz.{uuid.uuid4().hex[:8]}@example.org"
    paths = ["/tr", "/tr/", f"/v24.0/{PIXEL}/events", f"/{PIXEL}/events", "/x", "/%ff", "//"]
    ctypes = [
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=zz",
        "text/plain",
        "",
    ]
    bodies = [
        b"",
        b"{",
        b"[]",
        b"null",
        b'{"data": 5}',
        b'{"data": [1, "x", null]}',
        orjson.dumps({"data": [capi_event("f")], "access_token": TOKEN, "em": pii}),
        f"id={PIXEL}&ev=Lead&ud[em]={pii}".encode(),
        b"data=%7B",
        b"\xff\xfe\x00" * 50,
        b'--zz\r\nContent-Disposition: form-data; name="a"\r\n\r\n' + pii.encode(),
    ]
    answered = 0
    for i in range(300):
        if i % 10 == 0:
            raw = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 200)))
        else:
            body = rnd.choice(bodies)
            path = rnd.choice(paths) + rnd.choice(["", f"?ud[em]={pii}&id={PIXEL}", "?a=%zz"])
            method = rnd.choice(["GET", "POST", "PUT", "OPTIONS", "DELETE", "BREW"])
            head = [
                f"{method} {path} HTTP/1.1",
                f"Host: {host}",
                "Connection: close",
                f"Content-Type: {rnd.choice(ctypes)}",
                f"X-Forwarded-For: {rnd.choice(['1.2.3.4', 'junk', '', '::1, 2.2.2.2'])}",
            ]
            if rnd.random() < 0.8:
                short = 5 if rnd.random() < 0.03 else 0  # a body shorter than announced
                head.append(f"Content-Length: {len(body) + rnd.choice([0, 0, 0, -1]) + short}")
            raw = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(raw)
            try:
                if sock.recv(64):
                    answered += 1
            except (ConnectionResetError, TimeoutError):
                pass
    assert answered > 200
    assert collector.proc.poll() is None
    assert request(f"{collector.url}/healthz")[0] == 200
    ok = request(f"{collector.url}/tr?id={PIXEL}&ev=PageView&eid=after-fuzz")
    assert ok[0] == 200
    log = collector.log.read_text()
    metrics = request(f"{collector.url}/metrics")[2].decode()
    for text in (log, metrics):
        assert pii not in text and TOKEN not in text
    assert "Traceback" not in log


# --- headless Chromium -------------------------------------------------------------

PAGE = """<!doctype html><html><head><meta charset="utf-8"></head><body>
<p id="ua"></p><p id="beacon"></p>
<script>
  document.getElementById("ua").textContent = navigator.userAgent;
  var ok = navigator.sendBeacon("COLLECT/tr", "id=PIXEL&ev=Lead&eid=beacon-RUN&dl=" +
      encodeURIComponent(location.href));
  document.getElementById("beacon").textContent = ok ? "queued" : "refused";
</script>
<img src="COLLECT/tr?id=PIXEL&ev=PageView&eid=img-RUN&dl=https%3A%2F%2Fshop.example%2F"
     width="1" height="1" onload="document.body.dataset.img='loaded'">
</body></html>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail(
        "headless Chromium is needed for this test and is not installed: `make test` "
        "installs the Debian package `chromium` (apt-get); install it and run again"
    )


def test_headless_chromium_pixel_beacons(
    collector: CollectorProc, kafka: Any, tmp_path: Path
) -> None:
    browser = chromium()
    run = uuid.uuid4().hex[:8]
    page = PAGE.replace("COLLECT", collector.url).replace("PIXEL", PIXEL).replace("RUN", run)

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            f"http://127.0.0.1:{server.server_address[1]}/shop.html",
        ]
        out = subprocess.run(cmd, capture_output=True, timeout=90, env=dict(os.environ))
    finally:
        server.shutdown()
    dom = out.stdout.decode()
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert 'id="beacon">queued<' in dom, dom[-2000:]
    ua = dom.split('<p id="ua">', 1)[1].split("</p>", 1)[0].replace("&amp;", "&")
    assert "Chrome" in ua

    msgs = read_values(kafka, collector, collector.settings.topics.pixel_raw, 2)
    by_ev = {("beacon" if f"eid=beacon-{run}" in m["query"] else "img"): m for m in msgs}
    assert set(by_ev) == {"beacon", "img"}, msgs
    for m in by_ev.values():
        assert m["user_agent"] == ua  # the browser's own user agent
        assert m["ip"] == "127.0.0.1"
    assert by_ev["img"]["query"].startswith(f"id={PIXEL}&ev=PageView&eid=img-{run}")
    assert by_ev["beacon"]["query"].startswith(f"id={PIXEL}&ev=Lead&eid=beacon-{run}&dl=http")


def test_pending_bound_answers_503_and_every_2xx_is_written(
    make_settings: Any, kafka: Any, start_collector: Any
) -> None:
    """More requests waiting for Kafka's ack than CONVSTREAM_COLLECT_MAX_PENDING: the
    rest get 503 + Retry-After at once (back-pressure), never a 2xx without the ack."""
    from concurrent.futures import ThreadPoolExecutor

    s = collector_settings(make_settings(), collect_max_pending=2)
    kafka.create_topics(s, [s.topics.pixel_raw, s.topics.server_raw])
    c = start_collector(s)

    def hit(i: int) -> tuple[int, str, dict[str, str]]:
        st, h, _ = request(f"{c.url}/tr?id={PIXEL}&ev=PageView&eid=bp-{i}")
        return st, f"bp-{i}", h

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(hit, range(600)))
    statuses = {st for st, _, _ in results}
    assert statuses <= {200, 503}
    refused = [h for st, _, h in results if st == 503]
    assert refused, "the pending bound never answered 503"
    assert all(h.get("Retry-After", "").isdigit() for h in refused)
    assert c.metric("convstream_collect_rejected_total", reason="backpressure") == len(refused)
    acked = {rid for st, rid, _ in results if st == 200}
    got = kafka.read(s, s.topics.pixel_raw, idle_timeout=2, max_wait=30)
    written = {orjson.loads(v)["query"].rsplit("eid=", 1)[1] for _, v, _, _ in got}
    assert acked <= written and len(acked) > 0
    assert PIXEL not in request(f"{c.url}/metrics")[2].decode()  # no pixel ids in labels
