"""What a worker's local stores and Faust's recovery log say about a restart: the
persisted changelog offset and the live keys of each table partition (read from the
RocksDB files, read-only), and, per recovery Faust ran, where it started reading each
active changelog partition and how far it had to read (its "Reading Starts At" and
"Highwater" log tables). Used by bench/restart.py and the restart / standby tests."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from rocksdict import AccessType, Options, Rdict

from agents.stage import OFFSET_KEY

TP = tuple[str, int]  # (changelog topic, partition)


def table_db(data_dir: str | Path, table: str, partition: int) -> Path:
    """Where Faust's RocksDB store keeps one partition of a table."""
    return Path(data_dir) / "v1" / "tables" / f"{table}-{partition}.db"


def read_store(
    data_dir: str | Path, table: str, partition: int, prefixes: Iterable[bytes] = ()
) -> tuple[int | None, int]:
    """(persisted changelog offset or None, keys starting with one of ``prefixes``) of a
    table partition; (None, 0) when it has no database. Opened read-only: works while a
    worker has it open (it sees the database as of the open)."""
    path = table_db(data_dir, table, partition)
    if not path.exists():
        return None, 0
    want = tuple(prefixes)
    db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        raw = db.get(OFFSET_KEY)
        keys = 0
        if want:
            for key in db.keys():  # noqa: SIM118 (Rdict: keys() is the typed way)
                if isinstance(key, bytes) and key.startswith(want):
                    keys += 1
        return (None if raw is None else int(raw)), keys
    finally:
        db.close()


def persisted_offset(
    data_dir: str | Path, table: str, partition: int, tries: int = 5
) -> int | None:
    """The persisted offset, retried: a read-only open can fail while the owner compacts."""
    for i in range(tries):
        try:
            return read_store(data_dir, table, partition)[0]
        except Exception:  # rocksdict raises plain Exceptions
            if i == tries - 1:
                raise
            time.sleep(0.2)
    return None


def drop_persisted_offset(data_dir: str | Path, table: str, partition: int) -> None:
    """Delete a stopped worker's persisted offset (what the store looked like before the
    stages kept it: Faust's recovery then reads the changelog from its start)."""
    path = table_db(data_dir, table, partition)
    if path.exists():
        db = Rdict(str(path), Options(raw_mode=True))
        try:
            db.delete(OFFSET_KEY)
        finally:
            db.close()


@dataclass
class Recovery:
    """One recovery Faust ran (at start or after a rebalance), from its log."""

    ts: float  # when it logged the highwaters
    highwater: dict[TP, int] = field(default_factory=dict)  # last offset in the changelog
    start: dict[TP, int] = field(default_factory=dict)  # what the store held; -1: nothing

    def records_read(self, tp: TP) -> int:
        """Changelog records this recovery read for ``tp``: none when the store was at the
        highwater, else from the persisted offset (read again) to the highwater."""
        hw, start = self.highwater.get(tp, -1), self.start.get(tp, -1)
        return 0 if hw <= start else hw - max(start, 0) + 1

    def total_read(self) -> int:
        return sum(self.records_read(tp) for tp in self.highwater)


def _rows(table_text: str) -> list[tuple[str, int, int]]:
    """(topic, partition, value) rows of one of Faust's terminal log tables (a ditto
    mark repeats the topic above)."""
    rows: list[tuple[str, int, int]] = []
    topic = ""
    for line in table_text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not line.lstrip().startswith("|"):
            continue
        name, part, value = cells
        if not part.lstrip("-").isdigit() or not value.lstrip("-").isdigit():
            continue  # the header row
        topic = topic if name == "〃" else name
        rows.append((topic, int(part), int(value)))
    return rows


def recoveries(log: Path) -> list[Recovery]:
    """The recoveries in a worker's JSON-lines log, in order: each Faust logs a
    "Highwater - Active" table, then (when it has active partitions) a
    "Reading Starts At - Active" table."""
    out: list[Recovery] = []
    for line in log.read_bytes().splitlines():
        if b"faust.tables.recovery" not in line:
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        msg = str(rec.get("msg", ""))
        if "Highwater - Active" in msg:
            out.append(Recovery(ts=float(rec.get("ts", 0.0))))
            out[-1].highwater = {(t, p): v for t, p, v in _rows(msg)}
        elif "Reading Starts At - Active" in msg and out:
            out[-1].start = {(t, p): v for t, p, v in _rows(msg)}
    return out


def log_times(log: Path, text: str) -> list[float]:
    """The times of the log lines whose message contains ``text``."""
    times = []
    needle = text.encode()
    for line in log.read_bytes().splitlines():
        if needle in line:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if text in str(rec.get("msg", "")):
                times.append(float(rec["ts"]))
    return times
