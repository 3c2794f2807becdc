"""The offline driver behind ``convstream process``: raw JSONL files through the same
``Pipeline`` the worker runs (SPEC §10).

Messages are taken in order of ``received_at``: a stable sort of both files together,
pixel file first on ties. A line that is not a valid message keeps its place (it sorts
with the line before it in its file) and is dead-lettered there. Dead letters name the
topic the file stands for, ``partition`` null and ``offset`` the 0-based line number.

Each line is decoded once. For the order, ``read_lines`` reads ``received_at`` without
decoding a line that starts with it and ends with ``}`` (``{"received_at":<number>,``:
the raw messages ``convstream collect`` writes); ``process`` decodes every line and checks that
time. A line whose full decoding gives another one (a repeated key: the last one counts)
raises ``Misordered``, and ``run`` then orders both files again from fully decoded times.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final

import orjson

from streams import records
from streams.align import decoded_received_at
from streams.align import received_at as _received_at
from streams.attribution import Attributor, attribute
from streams.catalog import Catalog
from streams.dedupe import Deduper, DedupStage
from streams.model import Origin, Source
from streams.pipeline import Pipeline, Result
from streams.settings import Settings
from streams.tally import Tally


@dataclass(frozen=True, slots=True, init=False)
class Line:
    source: Source
    topic: str
    number: int  # 0-based line number in its file (the dead letter's "offset")
    value: bytes
    # received_at of ``value`` when read_lines found one (None: none, or not looked at);
    # ``process`` checks it against the decoded line (``Misordered``)
    received_at: float | None = field(compare=False)

    def __init__(  # written, not generated: see streams/model.py
        self,
        source: Source,
        topic: str,
        number: int,
        value: bytes,
        received_at: float | None = None,
    ) -> None:
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "topic", topic)
        object.__setattr__(self, "number", number)
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "received_at", received_at)


def _line_received_at(line: Line) -> float | None:
    ra = line.received_at
    return ra if ra is not None else _received_at(line.value)


class Misordered(Exception):
    """A line's ``received_at`` read for the order is not the one its decoding gives."""


# a line that starts with its received_at, a JSON number (the grammar of RFC 8259)
_LEADING_RECEIVED_AT: Final = re.compile(
    rb'\{"received_at":(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)[,}]'
)


def _read_received_at(raw: bytes, exact: bool) -> float | None:
    if not exact and raw[-1:] == b"}":  # (a cut line is not read from its start)
        m = _LEADING_RECEIVED_AT.match(raw)
        if m is not None:
            return float(m.group(1))  # checked when the line is decoded (``process``)
    return _received_at(raw)


def read_lines(source: Source, topic: str, data: bytes, exact: bool = False) -> list[Line]:
    """Every non-blank line of a JSONL file (blank lines are not messages), with its
    ``received_at``: read from the line's start when it is there (``exact``: always from
    the decoded line)."""
    return [
        Line(source, topic, n, raw, _read_received_at(raw, exact))
        for n, raw in enumerate(data.split(b"\n"))
        if raw.strip()
    ]


def exact_lines(lines: list[Line]) -> list[Line]:
    """``lines`` with each ``received_at`` taken from the decoded line."""
    return [Line(ln.source, ln.topic, ln.number, ln.value, _received_at(ln.value)) for ln in lines]


def ordered(pixel: list[Line], server: list[Line]) -> Iterator[Line]:
    """Both files in received_at order; ties: pixel first, then file order."""
    keyed: list[tuple[float, int, int, Line]] = []
    for rank, lines in ((0, pixel), (1, server)):
        last = float("-inf")
        for i, line in enumerate(lines):
            ra = _line_received_at(line)
            if ra is not None:
                last = ra
            keyed.append((last, rank, i, line))
    keyed.sort(key=itemgetter(0, 1, 2))
    return (k[3] for k in keyed)


def load_catalog(
    topic: str, data: bytes, now: float, tally: Tally
) -> tuple[Catalog, list[dict[str, Any]]]:
    """An ``ads.catalog`` JSONL file (one ad per line; a later line for the same ad_id
    replaces it): the catalog, and a dead letter (``invalid_ad``) per malformed line."""
    catalog = Catalog()
    dead: list[dict[str, Any]] = []
    for n, raw in enumerate(data.split(b"\n")):
        if not raw.strip():
            continue
        error = catalog.apply(None, raw)
        if error is not None:
            dead.append(records.dead_letter(Origin(topic, None, n), errors=[error], now=now))
            tally["catalog_rejected",] += 1
            tally["dead_letters", "catalog", error.code] += 1
            tally["errors", error.code] += 1
    return catalog, dead


def run(
    settings: Settings,
    pixel: list[Line],
    server: list[Line],
    now: float,
    catalog: Catalog | None = None,
) -> Result:
    """``process`` of both files in received_at order; when a line's time read for the
    order was not its decoded one (``Misordered``), again from decoded times."""
    try:
        return process(settings, ordered(pixel, server), now, catalog)
    except Misordered:
        pixel, server = exact_lines(pixel), exact_lines(server)
        return process(settings, ordered(pixel, server), now, catalog)


def process(
    settings: Settings, lines: Iterable[Line], now: float, catalog: Catalog | None = None
) -> Result:
    """Run every line through the pipeline, then dedup; held (merge-window) conversions
    are released as stream time (received_at) passes their window, the rest at the end.
    Then attribution over the conversions in the order they were emitted. Raises
    ``Misordered`` when a line's ``received_at`` is not the one its decoding gives."""
    pipeline = Pipeline(settings)
    stage = DedupStage(
        Deduper({}, {}, window=settings.dedup_window, merge_window=settings.merge_window)
    )
    out = Result()
    # the pipeline writes dead letters and counts straight into ``out``; its valid
    # events go through dedup first
    candidates = Result(dead_letters=out.dead_letters, tally=out.tally)
    stream_time = float("-inf")
    for line in lines:
        candidates.conversions.clear()
        origin = Origin(line.topic, None, line.number)
        ra, decoded = decoded_received_at(line.value)
        if line.received_at is not None and line.received_at != ra:
            raise Misordered(f"line {line.number} of {line.topic}")
        pipeline.process(line.source, line.value, origin, now, candidates, decoded)
        if ra is not None and ra > stream_time:
            stream_time = ra
            stage.release(stream_time, out.tally, out.conversions)
        stage.run(candidates.conversions, out.tally, out.conversions)
    stage.flush(out.tally, out.conversions)
    attributor = Attributor({}, (catalog or Catalog()).get)
    out.candidates = attribute(out.conversions, attributor, out.tally)
    return out


def dumps_lines(records: list[dict[str, Any]]) -> bytes:
    dumps = orjson.dumps  # (OPT_APPEND_NEWLINE measured 3x slower than adding b"\n")
    return b"".join([dumps(r) + b"\n" for r in records])
