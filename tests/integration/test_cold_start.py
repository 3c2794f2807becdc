"""A worker started right after its broker restarted gets its partitions at once.

The stall this guards against: a group joined while the broker's metadata still lacked
the worker's internal topics (created by Faust a moment before) left those topics'
partitions unassigned until the client's next metadata refresh, 5 minutes later. The
worker now creates its internal topics and waits until the metadata shows them before
any consumer joins, and ``/readyz`` stays false until every stage holds partitions.

The test runs its own throwaway broker (deploy/kafka/kafka.sh on a free port), so it can
restart it without disturbing the suite's broker."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.helpers import RECEIVED_AT
from tests.integration.conftest import REPO, all_topics, broker_port
from tests.integration.test_dedup import server

pytestmark = pytest.mark.integration
KAFKA = REPO / "deploy" / "kafka" / "kafka.sh"


class Broker:
    def __init__(self, tmp: Path) -> None:
        port = broker_port()  # it is restarted on the same port
        shared = Path(os.environ.get("KAFKA_LOCAL_DIR", REPO / ".cache" / "kafka"))
        self.env = dict(os.environ, KAFKA_LOCAL_PORT=str(port), KAFKA_LOCAL_DIR=str(tmp))
        # the jars are fetched once per checkout: reuse them instead of a second download
        for libs in shared.glob("libs-*"):
            if (libs / ".complete").exists() and not (tmp / libs.name).exists():
                tmp.mkdir(parents=True, exist_ok=True)
                (tmp / libs.name).symlink_to(libs)
        self.bootstrap = f"127.0.0.1:{port}"

    def run(self, cmd: str) -> None:
        subprocess.run([str(KAFKA), cmd], env=self.env, check=True, stdout=subprocess.DEVNULL)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "kafka")
    b.run("start")
    yield b
    b.run("stop")


def test_worker_after_a_broker_restart_has_its_partitions_at_once(
    broker: Broker, make_settings, start_worker, kafka
) -> None:
    s = make_settings(bootstrap_servers=broker.bootstrap)
    kafka.create_topics(s, all_topics(s))
    broker.run("stop")
    broker.run("start")  # a cold broker: the worker's topics do not exist yet
    t0 = time.monotonic()
    w = start_worker(s, wait=False)
    w.wait_ready(timeout=30)  # ready means every stage holds partitions
    kafka.produce(s, s.topics.server_raw, [server(f"c-{i}", RECEIVED_AT + i) for i in range(8)])
    got = kafka.read(s, s.topics.conversions, until_count=8, max_wait=30 - (time.monotonic() - t0))
    assert sorted(orjson.loads(v)["event_id"] for _, v, _, _ in got) == [f"c-{i}" for i in range(8)]
    assert time.monotonic() - t0 < 30
    assert "Ignoring missing topic" not in w.log.read_text()
