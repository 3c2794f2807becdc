"""``convstream forward --input FILE`` (backfills) and ``--dry-run DIR``: a conversions
JSONL file sent as the stream sends it, rejected events to a dead-letter file; or the
request bodies written to a directory, nothing sent."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from agents.graph_client import Rejected, Sender, count_rejected, new_session
from streams import forward as fwd
from streams.settings import Forward, Settings


@dataclass(frozen=True, slots=True)
class FileResult:
    events: int
    sent: int
    rejected: int
    requests: int
    bodies: int


def read_file(data: bytes) -> list[fwd.Item | fwd.Bad]:
    """Every non-blank line of a conversions JSONL file (offset = 0-based line number)."""
    return [fwd.decode(raw, None, n) for n, raw in enumerate(data.split(b"\n")) if raw.strip()]


def dry_run(things: list[fwd.Item | fwd.Bad], fw: Forward, out: Path) -> FileResult:
    """The request bodies that would be sent (no token), one JSON file each."""
    out.mkdir(parents=True, exist_ok=True)
    items = [t for t in things if isinstance(t, fwd.Item)]
    batches = fwd.chunks(items, fw.batch_size)
    for n, b in enumerate(batches):
        tec = f"-{b.test_event_code}" if b.test_event_code else ""
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in tec)
        path = out / f"{n:05d}-{b.pixel_id}{safe}.json"
        body = {
            "pixel_id": b.pixel_id,
            **fwd.request_body((i.event for i in b.items), b.test_event_code),
        }
        path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    return FileResult(len(things), 0, len(things) - len(items), 0, len(batches))


async def send_file(
    things: list[fwd.Item | fwd.Bad], settings: Settings, dead_letters: Path, source: str
) -> FileResult:
    """Send a file's conversions as the stream does; rejected ones to ``dead_letters``."""
    fw = settings.forward
    rejected = [Rejected(t, "invalid_record", None, 0) for t in things if isinstance(t, fwd.Bad)]
    items = [t for t in things if isinstance(t, fwd.Item)]
    async with new_session(fw) as session:
        sender = Sender(fw, session, fail_on_auth=True)
        results = await asyncio.gather(
            *(sender.deliver(b) for b in fwd.chunks(items, fw.batch_size))
        )
    for r in results:
        rejected.extend(r)
    count_rejected(rejected)
    now = time.time()
    rejected.sort(key=lambda r: r.thing.offset)
    dead_letters.parent.mkdir(parents=True, exist_ok=True)
    dead_letters.write_bytes(
        b"".join(
            orjson.dumps(fwd.dead_letter(source, r.thing, r.reason, r.outcome, r.attempts, now))
            + b"\n"
            for r in rejected
        )
    )
    n_rej = len(rejected)
    return FileResult(len(things), len(things) - n_rej, n_rej, sender.requests, 0)
