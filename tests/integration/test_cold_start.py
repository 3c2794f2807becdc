"""A worker started right after its broker restarted gets its partitions at once.

The stall this guards against: a group joined while the broker's metadata still lacked
the worker's internal topics (created by Faust a moment before) left those topics'
partitions unassigned until the client's next metadata refresh, 5 minutes later. The
worker now creates its internal topics and waits until the metadata shows them before
any consumer joins, and ``/readyz`` stays false until every stage holds partitions.

The test runs its own throwaway broker (conftest's ``own_broker``), so it can restart it
without disturbing the suite's broker."""

from __future__ import annotations

import time

import orjson
import pytest

from tests.helpers import RECEIVED_AT
from tests.integration.conftest import OwnBroker, all_topics
from tests.integration.test_dedup import server

pytestmark = pytest.mark.integration


def test_worker_after_a_broker_restart_has_its_partitions_at_once(
    own_broker: OwnBroker, make_settings, start_worker, kafka
) -> None:
    own_broker.run("start")
    s = make_settings(bootstrap_servers=own_broker.bootstrap)
    kafka.create_topics(s, all_topics(s))
    own_broker.run("stop")
    own_broker.run("start")  # a cold broker: the worker's topics do not exist yet
    t0 = time.monotonic()
    w = start_worker(s, wait=False)
    w.wait_ready(timeout=30)  # ready means every stage holds partitions
    kafka.produce(s, s.topics.server_raw, [server(f"c-{i}", RECEIVED_AT + i) for i in range(8)])
    got = kafka.read(s, s.topics.conversions, until_count=8, max_wait=30 - (time.monotonic() - t0))
    assert sorted(orjson.loads(v)["event_id"] for _, v, _, _ in got) == [f"c-{i}" for i in range(8)]
    assert time.monotonic() - t0 < 30
    assert "Ignoring missing topic" not in w.log.read_text()
