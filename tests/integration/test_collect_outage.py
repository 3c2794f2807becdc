"""The collector while its broker is stopped and started again (a broker of this test's
own: conftest's ``own_broker``): 503 + Retry-After while Kafka is away, and afterwards
no request that got a 2xx is missing from the raw topics."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest

from tests.integration.collect_helpers import (
    PIXEL,
    TOKEN,
    collector_settings,
    request,
)
from tests.integration.conftest import OwnBroker

pytestmark = pytest.mark.integration


def test_broker_outage_503_then_every_2xx_is_in_the_topic(
    own_broker: OwnBroker, make_settings: Any, start_collector: Any, kafka: Any
) -> None:
    s = collector_settings(
        make_settings(bootstrap_servers=own_broker.bootstrap, partitions=2),
        collect_ack_timeout=2.0,
    )
    # the collector starts before its broker: 503 and not ready until Kafka answers
    c = start_collector(s, wait=False)
    t0 = time.time()
    while time.time() - t0 < 30:
        try:
            if request(f"{c.url}/healthz", timeout=2)[0] == 200:
                break
        except OSError:  # not listening yet
            time.sleep(0.1)
    assert request(f"{c.url}/readyz")[0] == 503
    st, h, body = request(f"{c.url}/tr?id={PIXEL}&ev=PageView&eid=early")
    assert st == 503 and h["Retry-After"].isdigit()
    assert orjson.loads(body)["error"]["code"] == 2
    own_broker.run("start")
    c.wait_ready()  # it connected on its own and created the raw topics
    kafka.create_topics(s, [s.topics.pixel_raw, s.topics.server_raw])

    results: list[tuple[str, str, int, dict[str, str]]] = []  # (kind, id, status, headers)
    stop = threading.Event()

    def sender(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            rid = f"s{n}-{i}"
            try:
                if i % 2:
                    st, h, _ = request(f"{c.url}/tr?id={PIXEL}&ev=PageView&eid={rid}", timeout=10)
                    results.append(("pixel", rid, st, h))
                else:
                    body = {"data": [{"event_name": "Lead", "event_id": rid}],
                            "access_token": TOKEN}  # fmt: skip
                    st, h, _ = request(
                        f"{c.url}/v24.0/{PIXEL}/events", method="POST", body=orjson.dumps(body),
                        headers={"Content-Type": "application/json"}, timeout=10,
                    )  # fmt: skip
                    results.append(("capi", rid, st, h))
            except OSError:
                results.append(("error", rid, 0, {}))
            time.sleep(0.005)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        before = len(results)
        own_broker.run("stop")
        t_stop = time.time()
        # wait until the collector says so: 503s, not ready
        while not any(r[2] == 503 for r in results[before:]) and time.time() - t_stop < 20:
            time.sleep(0.1)
        ready_down = request(f"{c.url}/readyz")[0]
        time.sleep(2.0)
        own_broker.run("start")
        t_up = time.time()
        n_up = len(results)
        while not any(200 <= r[2] < 300 for r in results[n_up:]) and time.time() - t_up < 30:
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    statuses = {r[2] for r in results}
    assert statuses <= {200, 503}, statuses
    unavailable = [r for r in results if r[2] == 503]
    assert unavailable, "no 503 while the broker was stopped"
    assert all(r[3].get("Retry-After", "").isdigit() for r in unavailable)
    assert ready_down == 503
    assert any(200 <= r[2] < 300 for r in results[n_up:]), "no 2xx after the broker came back"
    assert request(f"{c.url}/readyz")[0] == 200

    acked = {(r[0], r[1]) for r in results if r[2] == 200}
    pixel = kafka.read(s, s.topics.pixel_raw, idle_timeout=3, max_wait=60)
    server = kafka.read(s, s.topics.server_raw, idle_timeout=3, max_wait=60)
    written = {("pixel", orjson.loads(v)["query"].rsplit("eid=", 1)[1]) for _, v, _, _ in pixel}
    written |= {("capi", e["event_id"]) for _, v, _, _ in server for e in orjson.loads(v)["data"]}
    missing = acked - written
    assert not missing, f"{len(missing)} acknowledged requests missing, e.g. {sorted(missing)[:5]}"
    print(
        f"\n{len(results)} requests: {len(acked)} acked (all in the topics), "
        f"{len(unavailable)} x 503; {len(written - acked)} written without a 2xx (retryable)"
    )
