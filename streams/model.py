"""The canonical event model shared by both input formats.

Parsing (``pixel.py``, ``capi.py``) turns a raw message into :class:`RawEvent` values
whose ``event`` is shaped like one Conversions API server event; everything after
parsing is the same for browser and server input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from streams.codes import Error

Source = Literal["browser", "server"]
SOURCES: tuple[Source, ...] = ("browser", "server")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a raw message came from (the dead letter's address)."""

    topic: str
    partition: int | None = None
    offset: int | None = None


@dataclass(slots=True)
class RawEvent:
    """One parsed, not yet validated event, in CAPI server-event shape."""

    source: Source
    index: int | None  # position in a server batch; None for a browser hit
    pixel_id: Any  # raw; validated later
    received_at: float
    event: Any  # a dict when well-formed; validation reports anything else
    test_event_code: Any = None
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Parsed:
    """A raw message after parsing: its events, or the errors that reject it whole."""

    events: list[RawEvent] = field(default_factory=list)
    errors: list[Error] = field(default_factory=list)  # message-level: dead-letter it whole
    received_at: float | None = None
    pixel_id: Any = None
    skipped: str | None = None  # reason a hit is counted but not a conversion
