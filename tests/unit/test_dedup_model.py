"""Properties: the dedup decisions equal an independent reference model of SPEC §6.

The model below is a plain O(n²) reading of SPEC §6 over the copies in received_at
order (ties: browser copies first, as ``convstream process`` orders them): it keeps the
list of kept copies and, for each copy, looks through that list. The code under test
must give the same decision for every copy, and the same decisions for any other order
of the copies that keeps received_at order (copies of different conversions received at
the same instant, in any order).

One tie is outside the property by construction: two id-less server copies received at
the very same instant that compete for one browser event (the first to come takes it);
the generator gives id-less server copies distinct received_at values.
"""

from __future__ import annotations

import copy
import hashlib
import random
from itertools import groupby
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.dedupe import WINDOW, Deduper, DedupStage
from streams.tally import Tally

T0 = 1795400000.0
FBPS = ["fb.1.1700000000000.111", "fb.1.1700000000000.222"]
XIDS = [hashlib.sha256(x.encode()).hexdigest() for x in ("crm-1", "crm-2")]

Ident = tuple[str, float, str, str | None]  # conversion_id, received_at, source, test code


def make(
    serial: int,
    source: str,
    t: float,
    eid: str | None,
    code: str | None,
    name: str,
    fbp: str | None,
    xid: str | None,
) -> dict[str, Any]:
    ud: dict[str, Any] = {}
    if fbp:
        ud["fbp"] = fbp
    if xid:
        ud["external_id"] = [xid]
    # SPEC formula for event-id copies; id-less copies: a distinct canonical event each
    basis = f"1|{name}|{eid}" if eid else f"id-less #{serial}"
    return {
        "conversion_id": hashlib.sha256(basis.encode()).hexdigest(),
        "pixel_id": "1",
        "event_name": name,
        "event_id": eid,
        "received_at": t,
        "user_data": ud,
        "custom_data": {},
        "sources": [source],
        "warnings": [],
        "dedup": {"method": None, "duplicates": 0},
        "test_event_code": code,
    }


@st.composite
def conversions(draw: st.DrawFn) -> list[dict[str, Any]]:
    """K conversions: each a browser copy and/or server copies (retries, with the
    browser's event id or none), event ids, fbps (with or without an appendix) and
    external ids shared between conversions, some test events. Copies in received_at
    order (ties: browser first)."""
    k = draw(st.integers(1, 7))
    copies: list[dict[str, Any]] = []
    serial = 0
    for _ in range(k):
        code = draw(st.sampled_from([None, None, "T1", "T2"]))
        name = draw(st.sampled_from(["Purchase", "Purchase", "Lead"]))
        eid = draw(st.sampled_from([None, "e1", "e2", "e3"]))
        fbp = draw(st.sampled_from([None, *FBPS]))
        if fbp and draw(st.booleans()):
            fbp += ".AbCd"  # an appendix on this conversion's browser copy
        xid = draw(st.sampled_from([None, None, *XIDS]))
        start = 5 * draw(st.integers(0, 8))  # a coarse grid: ties between conversions
        if draw(st.booleans()):
            copies.append(make(serial, "browser", T0 + start, eid, code, name, fbp, xid))
            serial += 1
        for _ in range(draw(st.integers(0, 3))):
            s_eid = eid if draw(st.booleans()) else None
            # the browser's fbp, or it cut by 5 characters (its appendix, or: another fbp)
            s_fbp = draw(st.sampled_from([fbp, fbp[:-5] if fbp else None, None]))
            s_xid = draw(st.sampled_from([xid, None]))
            t = T0 + start + draw(st.integers(-5, 30))
            if s_eid is None:
                t += serial / 1000  # distinct instants for id-less server copies
            copies.append(make(serial, "server", t, s_eid, code, name, s_fbp, s_xid))
            serial += 1
    # browser retries of one message at another time are possible too
    if copies and draw(st.booleans()):
        again = copy.deepcopy(draw(st.sampled_from(copies)))
        if again["event_id"]:
            again["received_at"] += draw(st.integers(1, 20))
            copies.append(again)
    copies.sort(key=order_key)
    # two messages that are the same copy (conversion_id, received_at, source) are a
    # replay of one message; keep one of each here (replays have tests of their own)
    seen: set[Ident] = set()
    unique = []
    for c in copies:
        if ident(c) not in seen:
            seen.add(ident(c))
            unique.append(c)
    return unique


def order_key(c: dict[str, Any]) -> tuple[float, int]:
    return c["received_at"], 0 if c["sources"][0] == "browser" else 1


def ident(c: dict[str, Any]) -> Ident:
    return c["conversion_id"], c["received_at"], c["sources"][0], c["test_event_code"]


def four(fbp: str | None) -> str | None:
    return ".".join(fbp.split(".")[:4]) if fbp else None


# --- the reference model -------------------------------------------------------------
def reference(copies: list[dict[str, Any]], window: int) -> list[tuple[Ident, Any]]:
    """Each copy → "kept" or ("duplicate", rule, (kept cid, kept received_at, code))."""
    kept: list[dict[str, Any]] = []  # copies kept so far, with an "absorbed" flag
    out: list[tuple[Ident, Any]] = []
    for c in copies:
        src, t, code = c["sources"][0], c["received_at"], c["test_event_code"]
        same_scope = [k for k in kept if k["event_name"] == c["event_name"] and k["code"] == code]
        verdict: Any = "kept"
        if c["event_id"]:
            same_key = [k for k in same_scope if k["event_id"] == c["event_id"]]
            if same_key and t - same_key[-1]["t"] <= window:  # the latest kept of the key
                k = same_key[-1]
                verdict = ("duplicate", "event_id", (k["cid"], k["t"], code))
                if src == "server" and k["src"] == "browser":
                    k["absorbed"] = True  # its server twin
        elif src == "server":
            free = []
            c_fbp = c["user_data"].get("fbp")
            c_xids = c["user_data"].get("external_id") or []
            for k in same_scope:
                if k["src"] != "browser" or k["absorbed"] or not t - window <= k["t"] <= t:
                    continue
                fbp_match = four(k["fbp"]) is not None and four(k["fbp"]) == four(c_fbp)
                if fbp_match or (k["xid"] is not None and k["xid"] in c_xids):
                    free.append((k["t"], k["cid"], "fbp" if fbp_match else "external_id", k))
            if free:
                _, _, rule, k = min(free, key=lambda f: (f[0], f[1]))
                k["absorbed"] = True
                verdict = ("duplicate", rule, (k["cid"], k["t"], code))
        if verdict == "kept":
            ud = c["user_data"]
            kept.append(
                {
                    "cid": c["conversion_id"],
                    "t": t,
                    "src": src,
                    "event_name": c["event_name"],
                    "event_id": c["event_id"],
                    "code": code,
                    "fbp": ud.get("fbp"),
                    "xid": (ud.get("external_id") or [None])[0],
                    "absorbed": False,
                }
            )
        out.append((ident(c), verdict))
    return out


# --- the code under test -------------------------------------------------------------
def decisions(copies: list[dict[str, Any]], window: int) -> list[tuple[Ident, Any]]:
    d = Deduper({}, {}, window=window)
    out: list[tuple[Ident, Any]] = []
    for c in copies:
        got = d.decide(copy.deepcopy(c), c["sources"][0])
        verdict: Any = "kept"
        if got.action == "duplicate":
            assert got.kept_cid is not None and got.kept_at is not None
            verdict = ("duplicate", got.method, (got.kept_cid, got.kept_at, c["test_event_code"]))
        else:
            assert got.action == "emit", got
        out.append((ident(c), verdict))
    return out


def reorder_ties(copies: list[dict[str, Any]], rnd: random.Random) -> list[dict[str, Any]]:
    """Another order keeping received_at order: copies of one instant (and source rank)
    shuffled."""
    out = []
    for _, tied in groupby(copies, key=order_key):
        block = list(tied)
        rnd.shuffle(block)
        out.extend(block)
    return out


@settings(max_examples=400, deadline=None)
@given(conversions(), st.sampled_from([WINDOW, 12]))
def test_in_received_at_order_the_decisions_are_the_reference_models(
    copies: list[dict[str, Any]], window: int
) -> None:
    assert decisions(copies, window) == reference(copies, window)


@settings(max_examples=300, deadline=None)
@given(conversions(), st.sampled_from([WINDOW, 12]), st.randoms(use_true_random=False))
def test_any_order_that_keeps_received_at_order_gives_the_same_decisions(
    copies: list[dict[str, Any]], window: int, rnd: random.Random
) -> None:
    expected = sorted(reference(copies, window), key=repr)
    assert sorted(decisions(reorder_ties(copies, rnd), window), key=repr) == expected


@settings(max_examples=200, deadline=None)
@given(conversions(), st.sampled_from([0, 5, 100]), st.randoms(use_true_random=False))
def test_the_stage_emits_exactly_the_kept_copies_with_or_without_a_merge_window(
    copies: list[dict[str, Any]], merge_window: int, rnd: random.Random
) -> None:
    # a merged conversion lists both sources: compare conversion_id, received_at, code
    kept = sorted(
        ((i[0], i[1], i[3]) for i, v in reference(copies, WINDOW) if v == "kept"), key=repr
    )
    stage = DedupStage(Deduper({}, {}, merge_window=merge_window))
    emitted: list[dict[str, Any]] = []
    tally = Tally()
    for c in reorder_ties(copies, rnd):
        stage.release(c["received_at"], tally, emitted)
        stage.run([copy.deepcopy(c)], tally, emitted)
    stage.flush(tally, emitted)
    got = sorted(
        ((r["conversion_id"], r["received_at"], r["test_event_code"]) for r in emitted), key=repr
    )
    assert got == kept
    assert tally.sum_of("duplicates") == len(copies) - len(kept)
    assert tally.sum_of("replays") == 0


@settings(max_examples=200, deadline=None)
@given(conversions(), st.sampled_from([0, 5]), st.randoms(use_true_random=False))
def test_out_of_received_at_order_nothing_is_lost(
    copies: list[dict[str, Any]], merge_window: int, rnd: random.Random
) -> None:
    """Any arrival order (copies later than the worker's reorder bound): every copy is
    decided, and each is emitted or a copy of a conversion that is emitted."""
    rnd.shuffle(copies)
    d = Deduper({}, {}, merge_window=merge_window)
    emitted: list[dict[str, Any]] = []
    copies_of: list[tuple[str, str | None]] = []
    for c in copies:
        got = d.decide(copy.deepcopy(c), c["sources"][0])
        emitted.extend(got.emit)
        if got.action in ("duplicate", "replay"):
            assert got.kept_cid is not None
            copies_of.append((got.kept_cid, c["test_event_code"]))
        else:
            assert got.action in ("emit", "hold")
        emitted.extend(d.due(c["received_at"]))
    emitted.extend(d.flush())
    out = {(r["conversion_id"], r["test_event_code"]) for r in emitted}
    assert len(emitted) + len(copies_of) == len(copies)
    assert set(copies_of) <= out
