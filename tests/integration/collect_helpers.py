"""Start `convstream collect` as a subprocess on a real broker (tests and their fixtures)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.cli import metric_sum
from streams.settings import Settings, to_env
from tests.integration.conftest import REPO, free_port

PIXEL = "1234567890"
TOKEN = "tok-test-secret-4f1e"


def request(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@dataclass
class CollectorProc:
    settings: Settings
    proc: subprocess.Popen[bytes]
    log: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://{self.settings.collect_host}:{self.settings.collect_port}"

    def wait_ready(self, timeout: float = 60) -> None:
        t0 = time.time()
        while True:
            try:
                status = request(f"{self.url}/readyz", timeout=2)[0]
            except OSError:
                status = 0
            if status == 200:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"collector exited: {self.log.read_text()[-3000:]}")
            if time.time() - t0 > timeout:
                raise AssertionError(f"collector not ready: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def metric(self, name: str, **labels: str) -> float:
        text = request(f"{self.url}/metrics")[2].decode()
        if not labels:
            return metric_sum(text, name)
        want = [f'{k}="{v}"' for k, v in labels.items()]
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") and all(w in line for w in want)
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def collector_settings(s: Settings, **over: Any) -> Settings:
    base = s.with_overrides(
        collect_port=free_port(),
        collect_tokens=frozenset({(PIXEL, TOKEN)}),
        collect_trusted_proxies=("127.0.0.1/32",),
    )
    return base.with_overrides(**over)


def collector_starter(tmp_path: Path) -> Iterator[Callable[..., CollectorProc]]:
    """Body of a ``start_collector`` fixture: start(settings) -> CollectorProc; all are
    stopped at the end (``yield from collector_starter(tmp_path)``)."""
    procs: list[CollectorProc] = []

    def start(settings: Settings, *, wait: bool = True) -> CollectorProc:
        log = tmp_path / f"collector-{len(procs)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSTREAM_")}
        env.update(to_env(settings))
        env["PYTHONPATH"] = str(REPO)
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "collect"],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        c = CollectorProc(settings, proc, log)
        procs.append(c)
        if wait:
            c.wait_ready()
        return c

    yield start
    for c in procs:
        c.stop()
