"""The collector's edge helpers that need no broker: log redaction, log rate limiting,
the key partitioner, and the pure modules' imports."""

from __future__ import annotations

import ast
import logging
import random
from pathlib import Path

from aiokafka.partitioner import DefaultPartitioner

from agents.collect import KeyPartitioner, RateLimit, RedactHttpErrors

REPO = Path(__file__).resolve().parents[2]


def test_key_partitioner_matches_aiokafkas_default() -> None:
    ours, theirs = KeyPartitioner(), DefaultPartitioner()
    rnd = random.Random(3)
    for _ in range(500):
        key = str(rnd.randrange(10**15)).encode()
        parts = list(range(rnd.randint(1, 64)))
        assert ours(key, parts, parts) == theirs(key, parts, parts)
        assert ours(key, parts, parts) == theirs(key, parts, parts)  # memoized path
    assert ours(None, [0, 1, 2], [1]) == 1


def record(
    msg: str, args: tuple[object, ...] = (), exc: BaseException | None = None
) -> logging.LogRecord:
    return logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, msg, args,
        (type(exc), exc, None) if exc else None,
    )  # fmt: skip


def test_aiohttp_error_lines_lose_the_request_bytes() -> None:
    secret = "ud[em]=raw.person@example.org&access_token=tok-123"
    rec = record("Error handling request from %s", ("127.0.0.1",), ValueError(secret))
    assert RedactHttpErrors().filter(rec)
    text = rec.getMessage()
    assert secret not in text and "tok-123" not in text and "127.0.0.1" not in text
    assert "ValueError" in text and rec.exc_info is None and rec.levelno == logging.WARNING
    plain = record("server started")
    assert RedactHttpErrors().filter(plain) and plain.getMessage() == "server started"


def test_rate_limit_passes_one_line_per_message_per_interval() -> None:
    limit = RateLimit(every=60.0)
    got = [limit.filter(record("Unable to update metadata from %s", (i,))) for i in range(100)]
    assert got.count(True) == 1
    assert limit.filter(record("another message"))


def test_pure_collect_modules_import_no_framework() -> None:
    for name in ("streams/collect.py", "streams/replay.py"):
        tree = ast.parse((REPO / name).read_text())
        mods: set[str] = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.Import):
                mods |= {a.name for a in n.names}
            elif isinstance(n, ast.ImportFrom):
                mods.add(n.module or "")
        top = {m.split(".")[0] for m in mods}
        assert not top & {"faust", "aiokafka", "aiohttp", "mode"}, (name, top)
