"""The canonical event model shared by both input formats.

Parsing (``pixel.py``, ``capi.py``) turns a raw message into :class:`RawEvent` values
whose ``event`` is shaped like one Conversions API server event; everything after
parsing is the same for browser and server input.


Per-event classes are dataclasses (equality, repr) with a written ``__init__``
(``init=False``): the compiled core compiles a written one, while the one dataclasses
generates stays interpreted (7% of the compiled offline path, by py-spy). Frozen ones
set their fields with ``object.__setattr__``, which compiled code turns into a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from streams.codes import Error

Source = Literal["browser", "server"]
SOURCES: tuple[Source, ...] = ("browser", "server")


@dataclass(frozen=True, slots=True, init=False)
class Origin:
    """Where a raw message came from (the dead letter's address)."""

    topic: str
    partition: int | None
    offset: int | None

    def __init__(self, topic: str, partition: int | None = None, offset: int | None = None):
        object.__setattr__(self, "topic", topic)
        object.__setattr__(self, "partition", partition)
        object.__setattr__(self, "offset", offset)


@dataclass(slots=True, init=False)
class RawEvent:
    """One parsed, not yet validated event, in CAPI server-event shape."""

    source: Source
    index: int | None  # position in a server batch; None for a browser hit
    pixel_id: Any  # raw; validated later
    received_at: float
    event: Any  # a dict when well-formed; validation reports anything else
    test_event_code: Any
    warnings: list[str]

    def __init__(
        self,
        source: Source,
        index: int | None,
        pixel_id: Any,
        received_at: float,
        event: Any,
        test_event_code: Any = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.source = source
        self.index = index
        self.pixel_id = pixel_id
        self.received_at = received_at
        self.event = event
        self.test_event_code = test_event_code
        self.warnings = [] if warnings is None else warnings


@dataclass(slots=True, init=False)
class Parsed:
    """A raw message after parsing: its events, or the errors that reject it whole."""

    events: list[RawEvent]
    errors: list[Error]  # message-level: dead-letter it whole
    received_at: float | None
    pixel_id: Any
    skipped: str | None  # reason a hit is counted but not a conversion

    def __init__(
        self,
        events: list[RawEvent] | None = None,
        errors: list[Error] | None = None,
        received_at: float | None = None,
        pixel_id: Any = None,
        skipped: str | None = None,
    ) -> None:
        self.events = [] if events is None else events
        self.errors = [] if errors is None else errors
        self.received_at = received_at
        self.pixel_id = pixel_id
        self.skipped = skipped
