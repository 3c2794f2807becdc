"""Fixtures for tests on a real Kafka broker (KAFKA_BOOTSTRAP_SERVERS, set by
deploy/kafka/with-broker.sh under `make test`). Every test gets its own topics,
consumer group and web port; fixtures are factories."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents import kafka_io
from streams.cli import metric_sum
from streams.settings import Settings, Topics, from_env, to_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bootstrap() -> str:
    bs = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bs:
        pytest.fail(
            "integration tests need a real broker: run `make test`, or start one with "
            "deploy/kafka/kafka.sh start and export KAFKA_BOOTSTRAP_SERVERS"
        )
    return bs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_port(n: int = 2) -> int:
    """A free port with the next ``n - 1`` free too (the controller, and the inter-broker
    listener of a secured broker) for a broker a test stops and starts again: below the
    kernel's ephemeral range (32768+ here), so no outgoing connection can take it while
    the broker is down."""
    import random

    while True:
        port = random.randrange(20_000, 32_000 - n)
        try:
            for p in range(port, port + n):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port


KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"


class OwnBroker:
    """A throwaway broker of a test's own (deploy/kafka/kafka.sh), so the test may stop,
    restart or secure it without disturbing the suite's: on ports from ``broker_port``,
    its state under ``state``, the jars and readiness probe of the checkout's cache
    linked in (fetched once). ``env``: more kafka.sh settings (KAFKA_LOCAL_SECURE...)."""

    def __init__(self, state: Path, env: dict[str, str] | None = None, ports: int = 2) -> None:
        self.port = broker_port(ports)
        shared = Path(os.environ.get("KAFKA_LOCAL_DIR", REPO / ".cache" / "kafka"))
        if not [libs for libs in shared.glob("libs-*") if (libs / ".complete").exists()]:
            fetched = subprocess.run(
                [str(KAFKA_SH), "fetch"],
                env=dict(os.environ, KAFKA_LOCAL_DIR=str(shared)),
                capture_output=True,
                text=True,
            )
            assert fetched.returncode == 0, f"kafka.sh fetch failed: {fetched.stderr[-2000:]}"
        state.mkdir(parents=True, exist_ok=True)
        for cached in [*shared.glob("libs-*"), *shared.glob("probe-*")]:
            complete = (cached / ".complete").exists() or (cached / "Ready.class").exists()
            if complete and not (state / cached.name).exists():
                (state / cached.name).symlink_to(cached)
        self.env = dict(
            os.environ, **(env or {}), KAFKA_LOCAL_PORT=str(self.port), KAFKA_LOCAL_DIR=str(state)
        )
        self.bootstrap = f"127.0.0.1:{self.port}"

    def run(self, cmd: str) -> str:
        """kafka.sh ``cmd`` (start, stop, reset); its stdout (start: the bootstrap)."""
        p = subprocess.run(
            [str(KAFKA_SH), cmd], env=self.env, capture_output=True, text=True, timeout=180
        )
        assert p.returncode == 0, f"kafka.sh {cmd} failed: {p.stderr[-2000:]}"
        return p.stdout.strip()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    """An :class:`OwnBroker`, not started yet: the test starts (and stops) it; stopped at
    the end."""
    b = OwnBroker(tmp_path / "kafka")
    yield b
    b.run("stop")


@pytest.fixture
def make_settings(bootstrap: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings with unique topics and app id for this test; keyword args override."""
    run = uuid.uuid4().hex[:10]

    def make(**over: Any) -> Settings:
        topics = Topics(
            pixel_raw=f"t{run}.pixel.raw",
            server_raw=f"t{run}.server.raw",
            catalog=f"t{run}.ads.catalog",
            conversions=f"t{run}.conversions",
            candidates=f"t{run}.candidates",
            dead_letter=f"t{run}.dead_letter",
        )
        base = from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap}).with_overrides(
            app_id=f"convstream-test-{run}",
            topics=topics,
            partitions=4,
            data_dir=str(tmp_path / "worker-data"),
            web_port=free_port(),
            batch_within=0.02,
        )
        return base.with_overrides(**over)

    return make


def http_get(url: str, timeout: float = 2) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


@dataclass
class WorkerProc:
    """A `convstream` subprocess serving /readyz and /metrics at ``url`` (the worker's and
    forward's on ``web_port``; a subclass may serve them elsewhere)."""

    settings: Settings
    proc: subprocess.Popen[bytes]
    log: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://{self.settings.web_host}:{self.settings.web_port}"

    def wait_ready(self, timeout: float = 90) -> None:
        t0 = time.time()
        while http_get(f"{self.url}/readyz")[0] != 200:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.log.stem} exited: {self.log.read_text()[-3000:]}")
            if time.time() - t0 > timeout:
                raise AssertionError(
                    f"{self.log.stem} not ready in {timeout}s: {self.log.read_text()[-3000:]}"
                )
            time.sleep(0.2)

    def metrics(self) -> str:
        status, body = http_get(f"{self.url}/metrics", timeout=15)
        assert status == 200
        return body.decode()

    def metric(self, name: str, **labels: str) -> float:
        text = self.metrics()
        if not labels:
            return metric_sum(text, name)
        want = [f'{k}="{v}"' for k, v in labels.items()]
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") and all(w in line for w in want)
        )

    def wait_metric(self, name: str, value: float, timeout: float = 60, **labels: str) -> float:
        t0 = time.time()
        got = -1.0
        while time.time() - t0 < timeout:
            got = self.metric(name, **labels)
            if got >= value:
                return got
            time.sleep(0.2)
        raise AssertionError(f"{name}{labels} = {got}, expected {value} within {timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment of a `convstream` subprocess: ``settings`` alone (no CONVSTREAM_ or
    KAFKA_ variable of this process leaks in), the checkout on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVSTREAM_", "KAFKA_"))}
    env.update(to_env(settings), PYTHONPATH=str(REPO))
    return env


def spawn_cli(command: str, settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """`convstream <command>` with ``settings``, stdout and stderr to ``log`` (its folder
    is the working directory)."""
    with log.open("wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", command],
            env=cli_env(settings),
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProc]]:
    """Start `convstream worker` (or ``command``: another long-running subcommand with
    /readyz and /metrics, e.g. forward; ``kind`` says where it serves them) as a
    subprocess with the given settings; ``wait``: until /readyz answers 200
    (``ready_timeout`` s). All are stopped at the end of the test."""
    procs: list[WorkerProc] = []

    def start(
        settings: Settings,
        *,
        wait: bool = True,
        name: str | None = None,
        command: str = "worker",
        ready_timeout: float = 90,
        kind: type[WorkerProc] = WorkerProc,
    ) -> WorkerProc:
        log = tmp_path / f"{name or command}-{len(procs)}.log"
        w = kind(settings, spawn_cli(command, settings, log), log)
        procs.append(w)
        if wait:
            w.wait_ready(ready_timeout)
        return w

    yield start
    for w in procs:
        w.stop()


@pytest.fixture
def start_collector(start_worker: Callable[..., WorkerProc]) -> Callable[..., Any]:
    """start(settings, wait=True) -> collect_helpers.CollectorProc: `convstream collect`
    through ``start_worker``, stopped at the end of the test."""
    from tests.integration.collect_helpers import collector_starter  # it imports this module

    return collector_starter(start_worker)


@pytest.fixture
def kafka() -> Any:
    """The aiokafka helpers, run synchronously."""

    class Sync:
        def create_topics(
            self, s: Settings, names: list[str], partitions: int | None = None
        ) -> None:
            asyncio.run(kafka_io.create_topics(s, names, partitions))

        def produce(self, s: Settings, topic: str, values: list[bytes], keys: Any = None) -> int:
            return asyncio.run(kafka_io.produce(s, topic, values, keys))

        def read(self, s: Settings, topic: str, **kw: Any) -> list[tuple[Any, Any, int, int]]:
            return asyncio.run(kafka_io.read(s, topic, **kw))

    return Sync()


def all_topics(s: Settings) -> list[str]:
    t = s.topics
    return [t.pixel_raw, t.server_raw, t.catalog, t.conversions, t.candidates, t.dead_letter]


def send_in_order(
    kafka: Any, s: Settings, worker: WorkerProc, items: list[tuple[str, bytes]]
) -> None:
    """(source, value) items one at a time, each read by the worker before the next, so
    the order across the two raw topics is the given one."""
    seen = worker.metric("convstream_messages_in_total")
    for source, value in items:
        topic = s.topics.pixel_raw if source == "browser" else s.topics.server_raw
        kafka.produce(s, topic, [value])
        seen += 1
        worker.wait_metric("convstream_messages_in_total", seen, timeout=30)


# -- a definite end: every input offset consumed, every output read to its end ---------


def end_offsets(s: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> end offset, now."""
    out: dict[tuple[str, int], int] = {}
    for topic in topics:
        ends = asyncio.run(kafka_io.end_offsets(s, topic))
        assert ends, f"topic {topic} has no partitions"
        out.update({(topic, p): off for p, off in ends.items()})
    return out


def committed(s: Settings, group: str) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the consumer group's committed offset (aiokafka admin)."""

    async def run() -> dict[tuple[str, int], int]:
        async with kafka_io.admin_client(s) as admin:
            offsets = await admin.list_consumer_group_offsets(group)
        return {(tp.topic, tp.partition): int(om.offset) for tp, om in offsets.items()}

    return asyncio.run(run())


def stage_progress(s: Settings, table: str) -> dict[int, int]:
    """A stateful stage's own input progress (agents/progress.py): the last ``o|<p>`` ->
    ``{"next": n}`` of each partition in the table's changelog, read to its end."""
    progress: dict[int, int] = {}
    for key, value, _, _ in read_to_end(s, f"{s.app_id}-{table}-changelog"):
        if key is not None and key.startswith(b"o|") and value is not None:
            progress[int(key[2:])] = int(orjson.loads(value)["next"])
    return progress


def wait_consumed(
    s: Settings,
    group: str,
    targets: dict[tuple[str, int], int],
    *,
    table: str | None = None,
    timeout: float = 120,
) -> None:
    """Wait until ``group`` has committed every offset of ``targets`` ((topic,
    partition) -> offset): all records below them consumed, lag 0 for what was there.
    With ``table``, the stage's own progress (changelog) must have passed them too: it is
    written after the batch's outputs are acknowledged. Raises when not reached (a stall
    is a failure, not a pass)."""
    deadline = time.monotonic() + timeout
    behind: dict[tuple[str, int], tuple[int, int]] = {}
    while True:
        done = committed(s, group)
        progress = stage_progress(s, table) if table is not None else {}
        behind = {
            tp: (done.get(tp, 0), progress.get(tp[1], 0))
            for tp, off in targets.items()
            if done.get(tp, 0) < off or (table is not None and progress.get(tp[1], 0) < off)
        }
        if not behind:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"group {group} did not consume {targets} within {timeout}s: "
                f"(committed, progress) still behind at {behind}"
            )
        time.sleep(0.5)


def dedup_consumed(s: Settings) -> None:
    """A definite end of what was produced so far: the ingest stage has committed the end
    offsets of both raw topics, then the dedup stage (Faust group and its own progress)
    every offset its input topic had by then: each conversion is decided and written."""
    raw = [s.topics.pixel_raw, s.topics.server_raw]
    wait_consumed(s, f"{s.app_id}-ingest", end_offsets(s, raw))
    dedup_in = end_offsets(s, [f"{s.app_id}-dedup-in"])  # ticks come later: >= is enough
    wait_consumed(s, s.app_id, dedup_in, table="dedup")


def read_to_end(
    s: Settings, topic: str, timeout: float = 90
) -> list[tuple[bytes | None, bytes | None, int, int]]:
    """Every record of ``topic`` from its beginning up to the end offsets it has when
    called (key, value, partition, offset); no idle timeout decides where it ends."""

    async def run() -> list[tuple[bytes | None, bytes | None, int, int]]:
        async with kafka_io.admin_client(s) as admin:
            parts = await kafka_io.topic_partitions(admin, topic)
        consumer = AIOKafkaConsumer(enable_auto_commit=False, **kafka_io.client_kwargs(s))
        await consumer.start()
        out: list[tuple[bytes | None, bytes | None, int, int]] = []
        try:
            tps = [TopicPartition(topic, p) for p in parts]
            assert tps, f"topic {topic} has no partitions"
            ends = await consumer.end_offsets(tps)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                if loop.time() > deadline:
                    raise AssertionError(f"{topic}: not read to {ends} within {timeout}s")
                batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
                for tp, records in batch.items():
                    out.extend(
                        (r.key, r.value, r.partition, r.offset)
                        for r in records
                        if r.offset < ends[tp]
                    )
        finally:
            await consumer.stop()
        return out

    return asyncio.run(run())
