"""The per-message path, shared by the Faust agents and the offline ``process`` command.

``Pipeline.process`` turns one raw message (bytes) into output records and never
raises on data: every message ends as conversions, dead letters, or a counted skip.
Time comes from the data (``received_at``) except ``now``, the emission time the
driver passes in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from streams import attribution, capi, codes, metrics, pixel, records, validate
from streams.capi import NOT_DECODED
from streams.codes import Error
from streams.model import Origin, Parsed, RawEvent, Source
from streams.pii import HASHED_KEYS, hash_user_data
from streams.quality import match_quality
from streams.settings import Settings
from streams.tally import Tally


@dataclass(slots=True)
class Result:
    """What one message (or a batch of them) produced."""

    conversions: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)  # attribution (SPEC §8)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)


class Pipeline:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def process(
        self,
        source: Source,
        value: bytes | None,
        origin: Origin,
        now: float,
        out: Result,
        decoded: object = NOT_DECODED,
    ) -> None:
        """Add what one raw message produces to ``out`` (conversions, dead letters,
        counts); ``decoded``: ``value`` already decoded from JSON (by the aligner)."""
        tally = out.tally
        tally["messages_in", source] += 1
        try:
            parsed = self._parse(source, value, decoded)
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

    def _parse(self, source: Source, value: bytes | None, decoded: object) -> Parsed:
        if value is None:
            return Parsed(errors=[Error(codes.MALFORMED_MESSAGE, None, "message has no value")])
        return capi.parse(value, decoded) if source == "server" else pixel.parse(value, decoded)

    def _event(self, raw: RawEvent, origin: Origin, now: float, out: Result) -> None:
        ev = raw.event
        tally = out.tally
        if not isinstance(ev, dict):
            where = "data[]" if raw.index is None else f"data[{raw.index}]"
            errors = [Error(codes.INVALID_TYPE, where, "an event must be a JSON object")]
            out.dead_letters.append(records.dead_letter(origin, errors=errors, now=now, raw=raw))
            _count_dead(tally, raw.source, errors)
            return
        ud = ev.get("user_data")
        pii = hash_user_data(
            ud if isinstance(ud, dict) else _NO_USER_DATA,
            default_phone_country=self.settings.default_phone_country,
            this_year=_year(raw.received_at),
        )
        for key, n in pii.hashed.items():
            tally[_HASHED[key]] += n
        if pii.prehashed:
            for key, n in pii.prehashed.items():
                tally[_PREHASHED[key]] += n
        if pii.dropped:
            for key, n in pii.dropped.items():
                tally["pii_values", key, "dropped"] += n
        user_data = pii.user_data
        checked = validate.check(raw, user_data, self.settings.pixel_allowlist)
        if pii.errors or checked.errors:
            errors = [*pii.errors, *checked.errors]
            safe = records.safe_event(ev, user_data)
            out.dead_letters.append(
                records.dead_letter(origin, errors=errors, now=now, raw=raw, safe_event=safe)
            )
            _count_dead(tally, raw.source, errors)
            return
        warnings = raw.warnings + checked.warnings if checked.warnings else list(raw.warnings)
        if pii.warnings:
            warnings.extend(pii.warnings)
        fbc = attribution.fbc_warning(user_data)
        if fbc is not None:
            warnings.append(fbc)
        rec = records.conversion(
            raw,
            checked,
            user_data,
            match_quality=match_quality(user_data),
            warnings=warnings,
            now=now,
        )
        out.conversions.append(rec)
        tally["valid_events", raw.source, metrics.event_label(rec["event_name"])] += 1
        for w in warnings:
            tally["warnings", w] += 1


_NO_USER_DATA: Final[dict[str, object]] = {}  # (read only)
# tally keys of the per-key PII counts, built once (two per hashed key and event)
_HASHED: Final = {k: ("pii_values", k, "hashed") for k in HASHED_KEYS}
_PREHASHED: Final = {k: ("pii_values", k, "prehashed") for k in HASHED_KEYS}


def _year(received_at: float) -> int:
    """The UTC year of ``received_at`` (time.gmtime floors it to whole seconds)."""
    return _year_of_day(int(received_at // 86_400))


@lru_cache(maxsize=64)
def _year_of_day(day: int) -> int:
    return time.gmtime(day * 86_400).tm_year


def _count_dead(tally: Tally, source: Source, errors: list[Error]) -> None:
    tally["dead_letters", source, errors[0].code] += 1
    for e in errors:
        tally["errors", e.code] += 1
