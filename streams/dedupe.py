"""SPEC §6 deduplication as pure decisions over a key-value state.

All state for one ``(pixel_id, event_name)`` lives on one partition (the stream is
repartitioned by that pair), so both rules and the merge window see one consistent
state. Keys in the state mapping (values are small JSON-able dicts):

- ``e|<pixel>|<event>|<event_id>``: the kept copy of an event-id key:
  ``{"t": received_at, "cid": conversion_id, "src": source}``.
- ``f|<pixel>|<event>|<fbp>`` and ``x|<pixel>|<event>|<hashed external_id>``: a kept
  browser event, for the fallback rule: ``{"t": received_at, "cid": its conversion_id}``.
- ``b|<cid>``: ``{"t": received_at, "absorbed": bool}``: one-to-one bookkeeping of a kept
  browser event (absorbs at most one server copy, whichever fallback key matched).
- ``h|<cid>``: a held conversion (merge window > 0): ``{"due": t, "rec": record,
  "seen": [[received_at, source], ...]}`` (the copies merged into it, so a copy read
  again after a crash is a replay, not a second merge).

Time is the data's: ``received_at`` decides windows; ``expire`` and ``due`` take the
caller's notion of now (stream time offline, stream time or the clock in the worker).
"""

from __future__ import annotations

import heapq
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from streams.metrics import event_label

WINDOW: Final = 172_800
Method = Literal["event_id", "fbp", "external_id"]
State = MutableMapping[str, dict[str, Any]]


@dataclass(slots=True)
class Decision:
    """What to do with one conversion record."""

    action: Literal["emit", "hold", "duplicate", "replay"]
    method: Method | None = None  # the rule that matched (duplicate) or keys it (kept)
    kept_cid: str | None = None  # for a duplicate: the conversion it is a copy of
    late: bool = False  # kept, but a copy of an expired key arrived (after the window)
    merged: bool = False  # a duplicate merged into a held conversion
    emit: list[dict[str, Any]] = field(default_factory=list)  # records to write now


def _ids(rec: dict[str, Any]) -> tuple[str, str]:
    return rec["pixel_id"], rec["event_name"]


def event_id_key(rec: dict[str, Any]) -> str | None:
    pixel, name = _ids(rec)
    eid = rec.get("event_id")
    return f"e|{pixel}|{name}|{eid}" if eid else None


def fallback_keys(rec: dict[str, Any]) -> list[tuple[Method, str]]:
    """The fallback keys of a record: fbp first, then each hashed external_id."""
    pixel, name = _ids(rec)
    ud = rec.get("user_data") or {}
    keys: list[tuple[Method, str]] = []
    fbp = ud.get("fbp")
    if fbp:
        keys.append(("fbp", f"f|{pixel}|{name}|{fbp}"))
    keys.extend(("external_id", f"x|{pixel}|{name}|{x}") for x in ud.get("external_id") or ())
    return keys


def partition_key(rec: dict[str, Any]) -> bytes:
    """The repartition key: every copy of one conversion shares it."""
    pixel, name = _ids(rec)
    return f"{pixel}|{name}".encode()


def _fresh(entry: dict[str, Any] | None, t: float, window: int) -> bool:
    """Within the window of the kept copy, on either side: copies reach the dedup stage in
    arrival order, which is not received_at order (the two raw topics are read
    independently), and a copy that arrives after the kept one is a duplicate even when
    its received_at is a little earlier."""
    return entry is not None and abs(t - entry["t"]) <= window


def merge(kept: dict[str, Any], dup: dict[str, Any]) -> None:
    """Merge a duplicate into a held record: keys the kept copy lacks are added."""
    for part in ("user_data", "custom_data"):
        into, other = kept[part], dup.get(part) or {}
        for k, v in other.items():
            if k not in into:
                into[k] = v
    for src in dup["sources"]:
        if src not in kept["sources"]:
            kept["sources"].append(src)
    kept["sources"].sort()
    for w in dup.get("warnings", ()):
        if w not in kept["warnings"]:
            kept["warnings"].append(w)


class Deduper:
    """Decisions for one state. ``merge_window`` 0 emits kept copies at once."""

    def __init__(self, state: State, held: State, *, window: int = WINDOW, merge_window: int = 0):
        self.state = state
        self.held = held
        self.window = window
        self.merge_window = merge_window
        # (due, cid) of every held record: releasing is O(released), not O(held)
        self._due: list[tuple[float, str]] = [(h["due"], cid) for cid, h in held.items()]
        heapq.heapify(self._due)

    def decide(self, rec: dict[str, Any], source: str) -> Decision:
        t = rec["received_at"]
        cid = rec["conversion_id"]
        ekey = event_id_key(rec)
        late = False
        if ekey is not None:
            kept = self.state.get(ekey)
            if kept is not None and kept["cid"] == cid and kept["t"] == t and kept["src"] == source:
                return Decision("replay", "event_id", kept_cid=cid)
            if _fresh(kept, t, self.window):
                return self._duplicate(rec, "event_id", cid)
            late = kept is not None
            self.state[ekey] = {"t": t, "cid": cid, "src": source}
        elif source == "server":
            for rule, fkey in fallback_keys(rec):
                reg = self.state.get(fkey)
                if reg is None or not _fresh(reg, t, self.window):
                    continue
                book = self.state.get(f"b|{reg['cid']}")  # type: ignore[index]
                if book is None or book["absorbed"]:
                    continue
                self.state[f"b|{reg['cid']}"] = {"t": book["t"], "absorbed": True}  # type: ignore[index]
                return self._duplicate(rec, rule, reg["cid"])  # type: ignore[index]
        if source == "browser":
            keys = fallback_keys(rec)
            for _, fkey in keys:
                self.state[fkey] = {"t": t, "cid": cid}
            if keys:
                self.state[f"b|{cid}"] = {"t": t, "absorbed": False}
        rec["dedup"] = {"method": "event_id" if ekey else None, "duplicates": 0}
        method: Method | None = "event_id" if ekey else None
        if self.merge_window > 0:
            due = t + self.merge_window
            self.held[cid] = {"due": due, "rec": rec}
            heapq.heappush(self._due, (due, cid))
            return Decision("hold", method, late=late)
        return Decision("emit", method, late=late, emit=[rec])

    def _duplicate(self, rec: dict[str, Any], method: Method, kept_cid: str) -> Decision:
        held = self.held.get(kept_cid)
        if held is not None:
            # a copy read again after a crash must not be merged (and counted) twice
            mark = [rec["received_at"], rec["sources"][0]]
            seen = held.setdefault("seen", [])
            if mark in seen:
                return Decision("replay", method, kept_cid=kept_cid)
            seen.append(mark)
            kept = held["rec"]
            merge(kept, rec)
            kept["dedup"]["duplicates"] += 1
            if kept["dedup"]["method"] is None:
                kept["dedup"]["method"] = method
            self.held[kept_cid] = held  # write back (a table needs the assignment)
        return Decision("duplicate", method, kept_cid=kept_cid, merged=held is not None)

    def due(self, now: float) -> list[dict[str, Any]]:
        """Held records whose merge window ended before ``now``, oldest first; removed.
        (A copy arriving exactly at the end of the window is still merged.)"""
        out = []
        while self._due and self._due[0][0] < now:
            _, cid = heapq.heappop(self._due)
            held = self.held.pop(cid, None)
            if held is not None:
                out.append(held["rec"])
        return out

    def flush(self) -> list[dict[str, Any]]:
        """Every held record, oldest first (end of input)."""
        return self.due(float("inf"))

    def expire(self, now: float) -> int:
        """Delete state older than the window before ``now``; return how many keys."""
        old = [k for k, v in self.state.items() if now - v["t"] > self.window]
        for k in old:
            del self.state[k]
        return len(old)


class DedupStage:
    """The dedup step of the pipeline, shared by the worker and ``convstream process``:
    decides each candidate conversion, counts outcomes, and releases held records."""

    def __init__(self, deduper: Deduper) -> None:
        self.deduper = deduper

    def run(
        self, candidates: list[dict[str, Any]], tally: Any, emitted: list[dict[str, Any]]
    ) -> None:
        for rec in candidates:
            source = rec["sources"][0]
            d = self.deduper.decide(rec, source)
            if d.action == "duplicate":
                ekey = event_id_key(rec)
                kept = self.deduper.state.get(ekey) if ekey else None
                kept_src = kept["src"] if d.method == "event_id" and kept else "browser"
                tally["duplicates", d.method, f"{kept_src}>{source}"] += 1
                if d.merged:
                    tally["merges",] += 1
            elif d.action == "replay":
                tally["replays",] += 1
            else:
                tally["kept", d.method or "none"] += 1
                if d.late:
                    tally["late_duplicates",] += 1
                self._out(d.emit, tally, emitted)

    def release(self, now: float, tally: Any, emitted: list[dict[str, Any]]) -> None:
        self._out(self.deduper.due(now), tally, emitted)

    def flush(self, tally: Any, emitted: list[dict[str, Any]]) -> None:
        self._out(self.deduper.flush(), tally, emitted)

    @staticmethod
    def _out(recs: list[dict[str, Any]], tally: Any, emitted: list[dict[str, Any]]) -> None:
        for rec in recs:
            tally["conversions_out", rec["sources"][0], event_label(rec["event_name"])] += 1
        emitted.extend(recs)
