"""The ingest child process lives and dies with the worker (agents/ingest_process.py)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from agents.failfast import EXIT_CODE
from tests.integration.conftest import all_topics

pytestmark = pytest.mark.integration


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def ingest_child(worker_pid: int) -> int:
    kids = [
        p
        for p in children(worker_pid)
        if b"agents.ingest_process" in Path(f"/proc/{p}/cmdline").read_bytes()
    ]
    assert len(kids) == 1, kids
    return kids[0]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_worker_takes_its_ingest_process_with_it(
    make_settings, start_worker, kafka
) -> None:
    s = make_settings(ingest_process="yes")
    kafka.create_topics(s, all_topics(s))
    w = start_worker(s)
    child = ingest_child(w.proc.pid)
    assert alive(child)
    w.proc.send_signal(signal.SIGKILL)
    w.proc.wait(10)
    deadline = time.time() + 10
    while alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(child), "the ingest process outlived its SIGKILLed worker"


def test_the_worker_exits_when_its_ingest_process_dies(make_settings, start_worker, kafka) -> None:
    s = make_settings(ingest_process="yes")
    kafka.create_topics(s, all_topics(s))
    w = start_worker(s)
    os.kill(ingest_child(w.proc.pid), signal.SIGKILL)
    assert w.proc.wait(30) == EXIT_CODE
    assert "the ingest process exited with code -9" in w.log.read_text()


def test_a_stopped_worker_stops_its_ingest_process(make_settings, start_worker, kafka) -> None:
    s = make_settings(ingest_process="yes")
    kafka.create_topics(s, all_topics(s))
    w = start_worker(s)
    child = ingest_child(w.proc.pid)
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(60) == 0
    assert not alive(child)
    assert "the ingest process exited" not in w.log.read_text()
