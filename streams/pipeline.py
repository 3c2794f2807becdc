"""The per-message path, shared by the Faust agents and the offline ``process`` command.

``Pipeline.process`` turns one raw message (bytes) into output records and never
raises on data: every message ends as conversions, dead letters, or a counted skip.
Time comes from the data (``received_at``) except ``now``, the emission time the
driver passes in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams import capi, codes, metrics, pixel, records
from streams.codes import Error
from streams.model import Origin, Parsed, RawEvent, Source
from streams.settings import Settings
from streams.tally import Tally


@dataclass(slots=True)
class Result:
    """What one message (or a batch of them) produced."""

    conversions: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)


class Pipeline:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def process(
        self, source: Source, value: bytes | None, origin: Origin, now: float, out: Result
    ) -> None:
        """Add what one raw message produces to ``out`` (conversions, dead letters, counts)."""
        tally = out.tally
        tally["messages_in", source] += 1
        try:
            parsed = self._parse(source, value)
        except Exception:  # a parser bug must not lose the message: dead-letter it
            parsed = Parsed(errors=[Error(codes.MALFORMED_MESSAGE, None, "unparseable message")])
        if parsed.errors:
            out.dead_letters.append(
                records.dead_letter(
                    origin,
                    errors=parsed.errors,
                    now=now,
                    received_at=parsed.received_at,
                    pixel_id=parsed.pixel_id,
                )
            )
            _count_dead(tally, source, parsed.errors)
            return
        if parsed.skipped is not None:
            tally["non_conversions", source, parsed.skipped] += 1
            return
        tally["events_in", source] += len(parsed.events)
        for raw in parsed.events:
            self._event(raw, origin, now, out)

    def _parse(self, source: Source, value: bytes | None) -> Parsed:
        if value is None:
            return Parsed(errors=[Error(codes.MALFORMED_MESSAGE, None, "message has no value")])
        return capi.parse(value) if source == "server" else pixel.parse(value)

    def _event(self, raw: RawEvent, origin: Origin, now: float, out: Result) -> None:
        ev = raw.event
        errors = _required(raw)
        if errors:
            out.dead_letters.append(records.dead_letter(origin, errors=errors, now=now, raw=raw))
            _count_dead(out.tally, raw.source, errors)
            return
        user_data = ev.get("user_data") if isinstance(ev.get("user_data"), dict) else {}
        custom_data = ev.get("custom_data") if isinstance(ev.get("custom_data"), dict) else {}
        body = records.capi_event(raw, dict(user_data), dict(custom_data))
        rec = records.conversion(
            raw,
            body,
            match_quality={"score": 0.0, "keys": []},
            warnings=list(raw.warnings),
            now=now,
        )
        out.conversions.append(rec)
        out.tally["conversions_out", raw.source, metrics.event_label(rec["event_name"])] += 1


def _count_dead(tally: Tally, source: Source, errors: list[Error]) -> None:
    tally["dead_letters", source, errors[0].code] += 1
    for e in errors:
        tally["errors", e.code] += 1


def _required(raw: RawEvent) -> list[Error]:
    """The minimum a record needs (the full rule set lives in validate.py)."""
    ev = raw.event
    if not isinstance(ev, dict):
        return [Error(codes.INVALID_TYPE, "data[]", "an event must be a JSON object")]
    errors = [
        Error(codes.MISSING_FIELD, f, f"{f} is required")
        for f in ("event_name", "event_time", "action_source")
        if ev.get(f) in (None, "")
    ]
    if raw.pixel_id in (None, ""):
        errors.append(Error(codes.MISSING_FIELD, "pixel_id", "pixel_id is required"))
    return errors
