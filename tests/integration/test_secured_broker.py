"""The worker and `convstream produce` against a secured broker, as managed Kafka is:
a SASL_SSL listener (SCRAM-SHA-512, certificate from a throwaway CA) and ACLs
(StandardAuthorizer, nothing allowed without an ACL).

One broker for the module: conftest's ``OwnBroker`` with KAFKA_LOCAL_SECURE=1 on ports of
its own, users created at storage format, deleted with the data at the end. The worker
principal is allowed only its own topics and groups; a wrong password and a principal
without ACLs on the raw topics must stop the worker at once with one clear line that
holds no secret."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from cryptography.hazmat.primitives import serialization

from agents import kafka_io
from streams.cli import worker_groups
from streams.settings import Settings, Topics, from_env
from tests.integration.conftest import OwnBroker, WorkerProc, cli_env, free_port

pytestmark = pytest.mark.integration

USERS = ("admin", "worker", "producer", "noraw")


@dataclass(frozen=True)
class SecureBroker:
    bootstrap: str
    cafile: str
    passwords: dict[str, str]

    def settings(self, user: str, password: str | None = None, **over: Any) -> Settings:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": password or self.passwords[user],
            "KAFKA_SSL_CAFILE": self.cafile,
        }
        return from_env(env).with_overrides(**over)

    def admin(self) -> AdminClient:
        return AdminClient(
            {
                "bootstrap.servers": self.bootstrap,
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "admin",
                "sasl.password": self.passwords["admin"],
                "ssl.ca.location": self.cafile,
            }
        )

    def allow(self, user: str, acls: list[tuple[int, str, int, int]]) -> None:
        """(resource type, name, pattern type, operation) ALLOW ACLs for ``user``."""
        bindings = [
            AclBinding(rt, name, pt, f"User:{user}", "*", op, AclPermissionType.ALLOW)
            for rt, name, pt, op in acls
        ]
        admin = self.admin()  # kept alive until the results are in
        for fut in admin.create_acls(bindings).values():
            fut.result(timeout=30)


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    d = tmp_path_factory.mktemp("secure-broker")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    keystore = d / "broker.pem"
    keystore.write_bytes(pkcs8 + b"".join(p.bytes() for p in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    passwords = {u: f"pw{secrets.token_hex(12)}" for u in USERS}
    users = d / "users"
    users.write_text("".join(f"{u}={p}\n" for u, p in passwords.items()))
    own = OwnBroker(
        d / "kafka",
        {
            "KAFKA_LOCAL_SECURE": "1",
            "KAFKA_LOCAL_TLS_KEYSTORE": str(keystore),
            "KAFKA_LOCAL_SCRAM_USERS": str(users),
        },
        ports=3,  # client, controller, inter-broker
    )
    bootstrap = own.run("start")
    try:
        yield SecureBroker(bootstrap, str(d / "ca.pem"), passwords)
    finally:
        own.run("reset")  # stopped, and its data (the users) deleted


def _topics(run: str) -> Topics:
    return Topics(
        pixel_raw=f"s{run}.pixel.raw",
        server_raw=f"s{run}.server.raw",
        catalog=f"s{run}.ads.catalog",
        conversions=f"s{run}.conversions",
        candidates=f"s{run}.candidates",
        dead_letter=f"s{run}.dead_letter",
        forward_dead_letter=f"s{run}.forward_dead_letter",
    )


def _user_topics(t: Topics) -> list[str]:
    return [t.pixel_raw, t.server_raw, t.catalog, t.conversions, t.candidates, t.dead_letter]


def worker_acls(s: Settings, *, raw: bool = True) -> list[tuple[int, str, int, int]]:
    """What `convstream worker` needs, and nothing more (README 'Secured Kafka')."""
    lit, pre = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    t, topic, group = s.topics, ResourceType.TOPIC, ResourceType.GROUP
    # no Read on conversions.enriched: the worker never reads its output back
    reads = [t.catalog, *((t.pixel_raw, t.server_raw) if raw else ())]
    acls = [(topic, name, lit, AclOperation.READ) for name in reads]
    acls += [(topic, n, lit, AclOperation.WRITE) for n in (t.conversions, t.candidates)]
    acls.append((topic, t.dead_letter, lit, AclOperation.WRITE))
    acls.append((topic, f"{s.app_id}-", pre, AclOperation.ALL))  # internal topics
    acls += [(group, g, lit, AclOperation.READ) for g in worker_groups(s)]
    return acls


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


def convstream(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def server_message(i: int) -> bytes:
    return orjson.dumps(
        {
            "received_at": 1795400000.0 + i,
            "pixel_id": "1234567890",
            "data": [
                {
                    "event_name": "Purchase",
                    "event_time": 1795399990 + i,
                    "event_id": f"order-{i}",
                    "action_source": "website",
                    "event_source_url": "https://shop.example/thanks",
                    "user_data": {
                        "em": f"buyer{i}@example.org",
                        "client_user_agent": "Mozilla/5.0",
                    },
                    "custom_data": {"value": 10 + i, "currency": "EUR"},
                }
            ],
        }
    )


def test_worker_and_produce_through_sasl_ssl_with_least_privilege(
    secure_broker: SecureBroker,
    start_worker: Callable[..., WorkerProc],
    run_id: str,
    tmp_path: Path,
) -> None:
    b = secure_broker
    admin = b.settings("admin", topics=_topics(run_id), partitions=2)
    asyncio.run(kafka_io.create_topics(admin, _user_topics(admin.topics)))
    s = b.settings(
        "worker",
        app_id=f"convstream-sec-{run_id}",
        topics=admin.topics,
        partitions=2,
        data_dir=str(tmp_path / "data"),
        web_port=free_port(),
        batch_within=0.02,
    )
    b.allow("worker", worker_acls(s))
    # the upstream producer may only write the raw topics
    raws = (s.topics.pixel_raw, s.topics.server_raw)
    lit, topic = ResourcePatternType.LITERAL, ResourceType.TOPIC
    b.allow("producer", [(topic, t, lit, AclOperation.WRITE) for t in raws])

    worker = start_worker(s)
    n = 20
    src = tmp_path / "server.jsonl"
    src.write_bytes(b"\n".join(server_message(i) for i in range(n)) + b"\n")
    producer = b.settings("producer", topics=s.topics)
    done = convstream(producer, "produce", "--topic", s.topics.server_raw, str(src))
    assert done.returncode == 0, done.stderr
    assert f"produced {n} messages" in done.stdout

    got = asyncio.run(
        kafka_io.read(admin, s.topics.conversions, until_count=n, idle_timeout=15, max_wait=60)
    )
    records = [orjson.loads(v) for _, v, _, _ in got]
    assert sorted(r["event_id"] for r in records) == sorted(f"order-{i}" for i in range(n))
    assert all(r["sources"] == ["server"] for r in records)
    worker.wait_metric("convstream_messages_in_total", n)

    # the producer principal cannot write what it has no ACL for: a clear error
    denied = convstream(producer, "produce", "--topic", s.topics.conversions, str(src))
    assert denied.returncode == 1
    assert "denied user 'producer'" in denied.stderr
    assert s.topics.conversions in denied.stderr
    assert "Traceback" not in denied.stderr
    log = worker.log.read_text()
    for pw in b.passwords.values():
        assert pw not in log and pw not in done.stdout + done.stderr + denied.stderr


def _fails_fast(w: WorkerProc, timeout: float = 30) -> str:
    t0 = time.monotonic()
    try:
        code = w.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker still running after {timeout}s") from None
    out = w.log.read_text()
    assert code == 1, out
    assert "Traceback" not in out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("convstream worker: "), out
    print(f"worker exited {code} after {time.monotonic() - t0:.1f}s: {lines[-1]}")
    return lines[-1]


def test_wrong_password_stops_the_worker_at_once_without_the_secret(
    secure_broker: SecureBroker,
    start_worker: Callable[..., WorkerProc],
    run_id: str,
    tmp_path: Path,
) -> None:
    b = secure_broker
    wrong = f"wrong{secrets.token_hex(12)}"
    s = b.settings(
        "worker",
        password=wrong,
        app_id=f"convstream-sec-{run_id}",
        topics=_topics(run_id),
        data_dir=str(tmp_path / "data"),
        web_port=free_port(),
    )
    w = start_worker(s, wait=False)
    line = _fails_fast(w)
    assert "rejected the SASL credentials of user 'worker'" in line
    assert "KAFKA_SASL_PASSWORD" in line
    full = w.log.read_text()
    assert wrong not in full and b.passwords["worker"] not in full

    produced = convstream(s, "produce", "--topic", s.topics.server_raw, os.devnull)
    assert produced.returncode == 1
    assert "rejected the SASL credentials" in produced.stderr
    assert wrong not in produced.stdout + produced.stderr
    assert "Traceback" not in produced.stderr


def test_a_principal_without_acls_on_the_raw_topics_gets_a_clear_error(
    secure_broker: SecureBroker,
    start_worker: Callable[..., WorkerProc],
    run_id: str,
    tmp_path: Path,
) -> None:
    b = secure_broker
    admin = b.settings("admin", topics=_topics(run_id), partitions=2)
    asyncio.run(kafka_io.create_topics(admin, _user_topics(admin.topics)))
    s = b.settings(
        "noraw",
        app_id=f"convstream-sec-{run_id}",
        topics=admin.topics,
        partitions=2,
        data_dir=str(tmp_path / "data"),
        web_port=free_port(),
    )
    b.allow("noraw", worker_acls(s, raw=False))
    w = start_worker(s, wait=False)
    line = _fails_fast(w)
    assert "denied user 'noraw'" in line
    assert f"Read on topic(s) {s.topics.pixel_raw}, {s.topics.server_raw}" in line
    assert s.topics.catalog not in line  # that one it may read
    assert b.passwords["noraw"] not in w.log.read_text()


def test_an_untrusted_broker_certificate_names_the_ca_setting(
    secure_broker: SecureBroker,
    start_worker: Callable[..., WorkerProc],
    run_id: str,
    tmp_path: Path,
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))  # not the CA that signed the broker's
    s = secure_broker.settings(
        "worker",
        app_id=f"convstream-sec-{run_id}",
        topics=_topics(run_id),
        data_dir=str(tmp_path / "data"),
        web_port=free_port(),
    ).with_overrides(ssl_cafile=str(other))
    w = start_worker(s, wait=False)
    line = _fails_fast(w)
    assert "is not trusted" in line
    assert f"KAFKA_SSL_CAFILE ({other})" in line
    assert secure_broker.passwords["worker"] not in w.log.read_text()
