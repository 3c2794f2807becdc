"""SPEC §6 deduplication as pure decisions over a key-value state.

All state for one ``(pixel_id, event_name)`` lives on one partition (the stream is
repartitioned by that pair), so both rules and the merge window see one consistent
state. The state is a flat mapping the caller need not be able to iterate; values are
small JSON-able dicts, each with ``"t"``: the newest received_at it depends on (the
worker's sweeper deletes a key whose ``"t"`` is older than stream time minus 48 h).

- ``e|<pixel>|<event>|<event_id>``: the kept copy of an event-id key:
  ``{"t": received_at, "cid": conversion_id, "src": source}``.
- ``f|<pixel>|<event>|<fbp>`` (fbp cut to its first four dot-separated parts) and
  ``x|<pixel>|<event>|<hashed external_id>``: the kept browser events registered under
  that key, for the fallback rule: ``{"t": newest, "l": [[received_at, cid], ...]}`` in
  received_at order (ties: by cid), at most ``MAX_REGISTERED`` entries (the oldest go
  first), entries older than the window dropped whenever the value is rewritten; an
  entry known to be absorbed carries the ``by`` of ``b|`` as a third item (a cache).
- ``b|<cid>``: one-to-one bookkeeping of the kept browser events with that conversion_id
  (whichever fallback key matches them): ``{"t": newest, "l": [[received_at, by], ...]}``
  where ``by`` is null (free) or ``[server cid, server received_at]`` (the server copy it
  absorbed, by the fallback or as its event-id twin; ``[]`` for a pre-upgrade entry).
- ``h|<cid>``: a held conversion (merge window > 0): ``{"due": t, "rec": record,
  "seen": [[received_at, source], ...]}`` (the copies merged into it, so a copy read
  again after a crash is a replay, not a second merge).

Test events (``test_event_code`` set, not empty) live in a namespace of their own, so
they dedupe only against events with the same code: their pixel segment is
``<pixel>#<len(code)>:<code>`` (``e|``, ``f|``, ``x|``), their ``b|`` and held keys
start with ``#<len(code)>:<code>|``. Live keys are unchanged (a pixel id is digits and a
conversion_id hex, so a namespaced key never equals a live one). Pre-upgrade values of
``f|`` (``{"t", "cid"}``) and ``b|`` (``{"t", "absorbed"}``) are read as one-entry lists.

Order: decisions assume copies come in received_at order (ties: browser copies first),
as ``convstream process`` feeds them and the worker's reorder buffer does within its
lateness bound; then they are exactly SPEC §6. A copy that comes later than that is
decided as well as it can be, never lost: see ``Deduper.decide``.

Time is the data's: ``received_at`` decides windows; ``expire`` and ``due`` take the
caller's notion of now (stream time offline, stream time or the clock in the worker).
"""

from __future__ import annotations

import heapq
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from streams.metrics import event_label

WINDOW: Final = 172_800
# browser events remembered per fbp / external_id key (and per conversion_id) within the
# window: a bound for keys shared by very many events (a bot, a constant placeholder fbp)
MAX_REGISTERED: Final = 32
Method = Literal["event_id", "fbp", "external_id"]
State = MutableMapping[str, dict[str, Any]]


Action = Literal["emit", "hold", "duplicate", "replay"]


@dataclass(slots=True, init=False)
class Decision:
    """What to do with one conversion record. (A written ``__init__``: see model.py.)"""

    action: Action
    method: Method | None  # the rule that matched (duplicate) or keys it (kept)
    kept_cid: str | None  # for a duplicate: the conversion it is a copy of
    kept_at: float | None  # for a duplicate: the received_at of that kept copy
    late: bool  # kept, but a copy of an expired key arrived (after the window)
    merged: bool  # a duplicate merged into a held conversion
    emit: list[dict[str, Any]]  # records to write now
    kept_src: str  # for a duplicate: the source of the kept copy (browser by the fallback)

    def __init__(
        self,
        action: Action,
        method: Method | None = None,
        *,
        kept_cid: str | None = None,
        kept_at: float | None = None,
        late: bool = False,
        merged: bool = False,
        emit: list[dict[str, Any]] | None = None,
    ) -> None:
        self.action = action
        self.method = method
        self.kept_cid = kept_cid
        self.kept_at = kept_at
        self.late = late
        self.merged = merged
        self.emit = [] if emit is None else emit
        self.kept_src = "browser"


def _ids(rec: dict[str, Any]) -> tuple[str, str]:
    return rec["pixel_id"], rec["event_name"]


def namespace(rec: dict[str, Any]) -> str:
    """``""`` for a live event, ``#<len>:<test_event_code>`` for a test event."""
    code = rec.get("test_event_code")
    return f"#{len(code)}:{code}" if isinstance(code, str) and code else ""


def _scope(rec: dict[str, Any]) -> str:
    pixel, name = _ids(rec)
    return f"{pixel}{namespace(rec)}|{name}"


def event_id_key(rec: dict[str, Any]) -> str | None:
    eid = rec.get("event_id")
    return f"e|{_scope(rec)}|{eid}" if eid else None


def first_four(value: str) -> str:
    """fbp / fbc compared on ``fb.<n>.<ms>.<id>``: an appendix (fifth part) is cut."""
    return value if value.count(".") < 4 else ".".join(value.split(".", 4)[:4])


def fallback_keys(rec: dict[str, Any]) -> list[tuple[Method, str]]:
    """The fallback keys of a record: fbp first, then each hashed external_id."""
    return _fallback_keys(rec, _scope(rec))


def _fallback_keys(rec: dict[str, Any], scope: str) -> list[tuple[Method, str]]:
    ud = rec.get("user_data") or {}
    keys: list[tuple[Method, str]] = []
    fbp = ud.get("fbp")
    if fbp and isinstance(fbp, str):
        keys.append(("fbp", f"f|{scope}|{first_four(fbp)}"))
    keys.extend(("external_id", f"x|{scope}|{x}") for x in ud.get("external_id") or ())
    return keys


def _book_key(ns: str, cid: str) -> str:
    return f"b|{ns}|{cid}" if ns else f"b|{cid}"


def _registered(value: dict[str, Any] | None) -> list[list[Any]]:
    """The ``[received_at, cid(, by)]`` entries of an ``f|`` / ``x|`` value (a new list:
    entries are replaced, never changed in place)."""
    if value is None:
        return []
    if "l" in value:
        return list(value["l"])
    return [[value["t"], value["cid"]]]  # pre-upgrade: the latest browser event only


def _book(value: dict[str, Any] | None) -> list[list[Any]]:
    """The ``[received_at, by]`` entries of a ``b|`` value (a new list, as above)."""
    if value is None:
        return []
    if "l" in value:
        return list(value["l"])
    return [[value["t"], [] if value.get("absorbed") else None]]  # pre-upgrade


def _insert(entries: list[list[Any]], entry: list[Any], window: int) -> dict[str, Any]:
    """``entries`` (in received_at order) without those older than the window, plus
    ``entry`` in its place, bounded by MAX_REGISTERED (the oldest go): the new value."""
    t = entry[0]
    newest = max(t, entries[-1][0]) if entries else t
    cut = 0
    while cut < len(entries) and newest - entries[cut][0] > window:
        cut += 1
    del entries[:cut]
    i = len(entries)
    order = (t, str(entry[1]))
    while i > 0 and (entries[i - 1][0], str(entries[i - 1][1])) > order:
        i -= 1
    entries.insert(i, entry)
    del entries[:-MAX_REGISTERED]
    return {"t": newest, "l": entries}


def partition_key(rec: dict[str, Any]) -> bytes:
    """The repartition key: every copy of one conversion shares it."""
    pixel, name = _ids(rec)
    return f"{pixel}|{name}".encode()


def _fresh(entry: dict[str, Any] | None, t: float, window: int) -> bool:
    """Within the window of the kept copy, on either side: in received_at order a later
    copy is never earlier; one that still comes out of order (later than the reorder
    bound) and is within the window of the kept copy is a duplicate of it."""
    return entry is not None and abs(t - entry["t"]) <= window


# the Limited Data Use fields a merge adds when the kept copy lacks them
_LDU_PLACE: Final = ("data_processing_options_country", "data_processing_options_state")


def merge(kept: dict[str, Any], dup: dict[str, Any]) -> None:
    """Merge a duplicate into a held record: keys the kept copy lacks are added. Its
    Limited Data Use options are added to the kept copy's (a copy that says LDU never
    comes out without it, even merged into one that did not), and its LDU country and
    state where the kept copy has none."""
    for part in ("user_data", "custom_data"):
        into, other = kept[part], dup.get(part) or {}
        for k, v in other.items():
            if k not in into:
                into[k] = v
    theirs = dup.get("data_processing_options") or []
    if theirs:
        ours = kept.get("data_processing_options") or []
        added = [o for o in theirs if o not in ours]
        if added:
            kept["data_processing_options"] = [*ours, *added]  # a new list: never shared
    for k in _LDU_PLACE:
        if k not in kept and k in dup:
            kept[k] = dup[k]
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
        """Decide one copy. Exactly SPEC §6 when copies come in received_at order (ties:
        browser copies first). A copy that comes out of that order is never lost and
        never raises: by the event_id rule it is a duplicate when within the window of
        the kept copy on either side (else kept, ``late``); by the fallback rule an
        id-less server copy only looks at browser events received no later than itself
        that are still free when it comes, so it can be kept where ``process`` would
        have absorbed it (a server copy received after it, decided before it, may have
        taken its browser event), and a browser copy that comes after later-received
        server copies were decided is registered for the server copies still to come
        (decided copies are not revisited: they were emitted)."""
        t = rec["received_at"]
        cid = rec["conversion_id"]
        ns = namespace(rec)
        scope = f"{rec['pixel_id']}{ns}|{rec['event_name']}"  # _scope(rec), once
        eid = rec.get("event_id")
        ekey = f"e|{scope}|{eid}" if eid else None  # event_id_key(rec)
        late = False
        if ekey is not None:
            kept = self.state.get(ekey)
            if kept is not None and kept["cid"] == cid and kept["t"] == t and kept["src"] == source:
                return Decision("replay", "event_id", kept_cid=cid)
            if kept is not None and _fresh(kept, t, self.window):
                if source == "server" and kept["src"] == "browser":
                    self._twin(ns, kept["cid"], kept["t"], [cid, t])
                d = self._duplicate(rec, "event_id", kept["cid"], kept["t"], ns)
                d.kept_src = kept["src"]
                return d
            late = kept is not None
        elif source == "server":
            found = self._absorber(rec, ns, cid, t, scope)
            if found is not None:
                return found
        if source == "browser":
            keys = _fallback_keys(rec, scope)
            if keys:
                bkey = _book_key(ns, cid)
                book = _book(self.state.get(bkey))
                if ekey is None and any(e[0] == t for e in book):
                    # an id-less browser copy read again: registered already
                    return Decision("replay", None, kept_cid=cid)
                self.state[bkey] = _insert(book, [t, None], self.window)
                for _, fkey in keys:
                    reg = _registered(self.state.get(fkey))
                    self.state[fkey] = _insert(reg, [t, cid], self.window)
        if ekey is not None:
            self.state[ekey] = {"t": t, "cid": cid, "src": source}
        rec["dedup"] = {"method": "event_id" if ekey else None, "duplicates": 0}
        method: Method | None = "event_id" if ekey else None
        if self.merge_window > 0:
            due = t + self.merge_window
            hkey = f"{ns}|{cid}" if ns else cid
            self.held[hkey] = {"due": due, "rec": rec}
            heapq.heappush(self._due, (due, hkey))
            return Decision("hold", method, late=late)
        return Decision("emit", method, late=late, emit=[rec])

    def _twin(self, ns: str, bcid: str, bt: float, by: list[Any]) -> None:
        """A kept browser event got its server twin by the event_id rule: it has absorbed
        a server copy (one-to-one), unless it had one already."""
        bkey = _book_key(ns, bcid)
        value = self.state.get(bkey)
        if value is None:  # no fallback key: nothing can match it anyway
            return
        book = _book(value)
        for j, e in enumerate(book):
            if e[0] == bt and e[1] is None:
                book[j] = [bt, by]
                self.state[bkey] = {"t": value["t"], "l": book}
                return

    def _absorber(
        self, rec: dict[str, Any], ns: str, cid: str, t: float, scope: str
    ) -> Decision | None:
        """An id-less server copy: absorbed by the earliest free browser event received
        within the window before it (by received_at, then cid; fbp before external_id
        on a tie) that matches one of its fallback keys; a replay when a browser event
        already records this very copy as absorbed.

        ``b|`` is the truth; an ``f|`` / ``x|`` entry caches its ``by`` once known (set
        when absorbed through that key, or learnt from ``b|`` during a scan and written
        back), so a scan reads ``b|`` only for entries that look free."""
        books: dict[str, list[list[Any]]] = {}
        regs: list[tuple[str, dict[str, Any], list[list[Any]], bool]] = []
        best: tuple[float, str, Method, int, int] | None = None  # t, cid, rule, reg, entry
        for rule, fkey in _fallback_keys(rec, scope):
            value = self.state.get(fkey)
            if value is None:
                continue
            entries, stale = _registered(value), False
            for i, e in enumerate(entries):
                bt, bcid = e[0], e[1]
                if bt > t:
                    break
                if t - bt > self.window:
                    continue
                by = e[2] if len(e) > 2 else None
                if by is None:
                    book = books.get(bcid)
                    if book is None:
                        book = books[bcid] = _book(self.state.get(_book_key(ns, bcid)))
                    by = next((b[1] for b in book if b[0] == bt), [])
                    if by is not None:  # absorbed through another key or by its twin
                        entries[i] = [bt, bcid, by]
                        stale = True
                if by == [cid, t]:
                    return Decision("replay", rule, kept_cid=bcid, kept_at=bt)
                if by is None:
                    if best is None or (bt, bcid) < best[:2]:
                        best = (bt, bcid, rule, len(regs), i)
                    break  # the first free entry of this key: later ones cannot win
            regs.append((fkey, value, entries, stale))
        if best is not None:
            bt, bcid, rule, r, i = best
            book = books[bcid]
            for j, b in enumerate(book):
                if b[0] == bt and b[1] is None:
                    book[j] = [bt, [cid, t]]
                    break
            self.state[_book_key(ns, bcid)] = {"t": max(b[0] for b in book), "l": book}
            fkey, value, entries, _ = regs[r]
            entries[i] = [bt, bcid, [cid, t]]
            regs[r] = (fkey, value, entries, True)
        for fkey, value, entries, stale in regs:
            if stale:
                self.state[fkey] = {"t": value["t"], "l": entries}
        if best is None:
            return None
        return self._duplicate(rec, best[2], best[1], best[0], ns)

    def _duplicate(
        self, rec: dict[str, Any], method: Method, kept_cid: str, kept_at: float, ns: str
    ) -> Decision:
        hkey = f"{ns}|{kept_cid}" if ns else kept_cid
        held = self.held.get(hkey)
        if held is not None:
            # a copy read again after a crash must not be merged (and counted) twice
            mark = [rec["received_at"], rec["sources"][0]]
            seen = held.setdefault("seen", [])
            if mark in seen:
                return Decision("replay", method, kept_cid=kept_cid, kept_at=kept_at)
            seen.append(mark)
            kept = held["rec"]
            merge(kept, rec)
            kept["dedup"]["duplicates"] += 1
            if kept["dedup"]["method"] is None:
                kept["dedup"]["method"] = method
            self.held[hkey] = held  # write back (a table needs the assignment)
        merged = held is not None
        return Decision("duplicate", method, kept_cid=kept_cid, kept_at=kept_at, merged=merged)

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
                tally["duplicates", d.method, f"{d.kept_src}>{source}"] += 1
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
