"""Start `convstream collect` as a subprocess on a real broker (tests and their fixtures)."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import Any

from streams.settings import Settings
from tests.integration.conftest import WorkerProc, free_port

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


class CollectorProc(WorkerProc):
    """`convstream collect`: its /readyz and /metrics on ``collect_port``."""

    def __post_init__(self) -> None:
        self.url = f"http://{self.settings.collect_host}:{self.settings.collect_port}"


def collector_settings(s: Settings, **over: Any) -> Settings:
    base = s.with_overrides(
        collect_port=free_port(),
        collect_tokens=frozenset({(PIXEL, TOKEN)}),
        collect_trusted_proxies=("127.0.0.1/32",),
    )
    return base.with_overrides(**over)


def collector_starter(start_worker: Callable[..., WorkerProc]) -> Callable[..., CollectorProc]:
    """Body of a ``start_collector`` fixture over conftest's ``start_worker``:
    start(settings, wait=True) -> CollectorProc, stopped at the end of the test."""

    def start(settings: Settings, *, wait: bool = True) -> CollectorProc:
        c = start_worker(
            settings, wait=wait, command="collect", kind=CollectorProc, ready_timeout=60
        )
        assert isinstance(c, CollectorProc)
        return c

    return start
