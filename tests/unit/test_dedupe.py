"""SPEC §6 decisions: the event_id rule, the one-to-one fbp/external_id fallback, the
48 h window, the merge window; properties over any interleaving of copies."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.dedupe import WINDOW, Deduper, DedupStage
from streams.tally import Tally

T0 = 1795400000.0


def rec(
    source: str,
    t: float,
    *,
    event_id: str | None = "order-1",
    name: str = "Purchase",
    pixel: str = "1",
    fbp: str | None = None,
    xid: str | None = None,
    ud: dict[str, Any] | None = None,
    cd: dict[str, Any] | None = None,
) -> dict[str, Any]:
    user_data: dict[str, Any] = dict(ud or {})
    if fbp:
        user_data["fbp"] = fbp
    if xid:
        user_data["external_id"] = [hashlib.sha256(xid.encode()).hexdigest()]
    basis = f"{pixel}|{name}|{event_id}" if event_id else f"{source}|{t}|{fbp}|{xid}"
    return {
        "conversion_id": hashlib.sha256(basis.encode()).hexdigest(),
        "pixel_id": pixel,
        "event_name": name,
        "event_id": event_id,
        "received_at": t,
        "user_data": user_data,
        "custom_data": dict(cd or {}),
        "sources": [source],
        "warnings": [],
        "dedup": {"method": None, "duplicates": 0},
    }


def run(records: list[dict[str, Any]], merge_window: int = 0) -> tuple[list[dict[str, Any]], Tally]:
    stage = DedupStage(Deduper({}, {}, merge_window=merge_window))
    out: list[dict[str, Any]] = []
    tally = Tally()
    for r in records:
        stage.release(r["received_at"], tally, out)
        stage.run([copy.deepcopy(r)], tally, out)
    stage.flush(tally, out)
    return out, tally


def test_browser_then_server_and_server_then_browser() -> None:
    for first, second in (("browser", "server"), ("server", "browser")):
        out, tally = run([rec(first, T0), rec(second, T0 + 5)])
        assert len(out) == 1 and out[0]["sources"] == [first]
        assert tally["duplicates", "event_id", f"{first}>{second}"] == 1


def test_a_copy_arriving_later_with_an_earlier_received_at_is_a_duplicate() -> None:
    # the stream sees copies in arrival order; received_at order can differ slightly
    out, tally = run([rec("server", T0 + 5), rec("browser", T0)])
    assert len(out) == 1 and out[0]["sources"] == ["server"]
    b = rec("browser", T0 + 5, event_id=None, fbp="fb.1.1.5")
    s = rec("server", T0 + 4, event_id=None, fbp="fb.1.1.5")
    out, tally = run([b, s])
    assert len(out) == 1 and tally["duplicates", "fbp", "browser>server"] == 1


def test_retries_of_one_source_are_duplicates() -> None:
    out, tally = run([rec("server", T0 + i) for i in range(4)])
    assert len(out) == 1 and tally.sum_of("duplicates") == 3


def test_different_event_names_or_pixels_are_not_duplicates() -> None:
    out, _ = run(
        [rec("server", T0), rec("server", T0 + 1, name="Lead"), rec("server", T0 + 2, pixel="2")]
    )
    assert len(out) == 3


def test_48h_edge() -> None:
    out, tally = run([rec("server", T0), rec("browser", T0 + WINDOW)])
    assert len(out) == 1
    out, tally = run([rec("server", T0), rec("browser", T0 + WINDOW + 1)])
    assert len(out) == 2 and tally.sum_of("late_duplicates") == 1


def test_fallback_fbp_one_to_one() -> None:
    b = rec("browser", T0, event_id=None, fbp="fb.1.1.42")
    s1 = rec("server", T0 + 10, event_id=None, fbp="fb.1.1.42")
    s2 = rec("server", T0 + 20, event_id=None, fbp="fb.1.1.42")
    out, tally = run([b, s1, s2])
    # the browser copy absorbs one server copy; the second server copy is its own conversion
    assert [r["sources"] for r in out] == [["browser"], ["server"]]
    assert tally["duplicates", "fbp", "browser>server"] == 1


def test_fallback_external_id_and_browser_with_its_own_event_id() -> None:
    b = rec("browser", T0, event_id="pixel-eid", xid="crm-9")
    s = rec("server", T0 + 3, event_id=None, xid="crm-9")
    out, tally = run([b, s])
    assert len(out) == 1 and tally["duplicates", "external_id", "browser>server"] == 1


def test_fallback_never_matches_a_server_event_that_came_first() -> None:
    s = rec("server", T0, event_id=None, fbp="fb.1.1.7")
    b = rec("browser", T0 + 1, event_id=None, fbp="fb.1.1.7")
    out, _ = run([s, b])
    assert len(out) == 2


def test_fallback_ignores_server_events_with_an_event_id_and_browser_events() -> None:
    b1 = rec("browser", T0, event_id=None, fbp="fb.1.1.8")
    b2 = rec("browser", T0 + 1, event_id=None, fbp="fb.1.1.8")  # browser never dropped
    s = rec("server", T0 + 2, event_id="other", fbp="fb.1.1.8")  # has an event id
    out, _ = run([b1, b2, s])
    assert len(out) == 3


def test_fallback_window_is_48h() -> None:
    b = rec("browser", T0, event_id=None, fbp="fb.1.1.9")
    out, _ = run([b, rec("server", T0 + WINDOW + 1, event_id=None, fbp="fb.1.1.9")])
    assert len(out) == 2


def test_merge_window_merges_then_emits_once() -> None:
    b = rec("browser", T0, ud={"fbp": "fb.1"}, cd={"value": 1, "currency": "EUR"})
    s = rec("server", T0 + 5, ud={"em": ["e" * 64], "fbp": "other"}, cd={"content_ids": ["x"]})
    late = rec("server", T0 + 50)  # after the window: a plain duplicate
    out, tally = run([b, s, late], merge_window=10)
    (c,) = out
    assert c["sources"] == ["browser", "server"]
    assert c["user_data"] == {"fbp": "fb.1", "em": ["e" * 64]}  # kept copy's fbp wins
    assert c["custom_data"] == {"value": 1, "currency": "EUR", "content_ids": ["x"]}
    assert c["dedup"] == {"method": "event_id", "duplicates": 1}
    assert tally.sum_of("merges") == 1 and tally.sum_of("duplicates") == 2


def test_held_records_are_released_in_order_of_their_window() -> None:
    a = rec("server", T0, event_id="a")
    b = rec("server", T0 + 1, event_id="b")
    out, _ = run([a, b, rec("server", T0 + 100, event_id="c")], merge_window=10)
    assert [r["event_id"] for r in out] == ["a", "b", "c"]


def test_replay_of_the_kept_event_is_not_a_duplicate() -> None:
    d = Deduper({}, {})
    r = rec("server", T0)
    assert d.decide(copy.deepcopy(r), "server").action == "emit"
    assert d.decide(copy.deepcopy(r), "server").action == "replay"
    assert d.decide(rec("browser", T0 + 1), "browser").action == "duplicate"


def test_expire_removes_old_state() -> None:
    d = Deduper({}, {})
    d.decide(rec("browser", T0, event_id="e", fbp="f", xid="x"), "browser")
    assert len(d.state) == 4  # e|, f|, x|, b|
    assert d.expire(T0 + WINDOW) == 0
    assert d.expire(T0 + WINDOW + 1) == 4 and not d.state


# --- properties ----------------------------------------------------------------------
@st.composite
def copies_of_k_conversions(draw: st.DrawFn) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
    """K conversions, each as several copies (browser, server, retries), interleaved in
    any order; fallback pairs keep the browser copy first (SPEC: a server copy that
    arrives first is never matched by the fallback)."""
    k = draw(st.integers(1, 6))
    groups: list[list[tuple[str, dict[str, Any]]]] = []
    for i in range(k):
        kind = draw(st.sampled_from(["eid", "fallback"]))
        if kind == "eid":
            n = draw(st.integers(1, 4))
            group = [
                (draw(st.sampled_from(["browser", "server"])), {"event_id": f"e{i}"})
                for _ in range(n)
            ]
        else:
            group = [("browser", {"event_id": None, "fbp": f"fb.1.1.{i}"}),
                     ("server", {"event_id": None, "fbp": f"fb.1.1.{i}"})]  # fmt: skip
        groups.append(group)
    # interleave: draw a merge order that keeps each group's internal order
    order: list[tuple[str, dict[str, Any]]] = []
    cursors = [0] * k
    while any(c < len(g) for c, g in zip(cursors, groups, strict=True)):
        live = [j for j in range(k) if cursors[j] < len(groups[j])]
        j = draw(st.sampled_from(live))
        order.append(groups[j][cursors[j]])
        cursors[j] += 1
    return k, order


@settings(max_examples=300, deadline=None)
@given(
    copies_of_k_conversions(),
    st.sampled_from([0, 5, 100]),
    st.lists(st.floats(0, 3600), min_size=30, max_size=30),
)
def test_any_interleaving_of_k_conversions_yields_k(
    case: tuple[int, list[tuple[str, dict[str, Any]]]], merge_window: int, jitter: list[float]
) -> None:
    """Arrival order is any interleaving; received_at is NOT in arrival order (jitter)."""
    k, order = case
    records = [rec(src, T0 + jitter[i % 30], **kw) for i, (src, kw) in enumerate(order)]
    out, tally = run(records, merge_window)
    assert len(out) == k
    assert len({r["conversion_id"] for r in out}) == k
    # an identical copy (same source and received_at) is a replay of the same message
    assert tally.sum_of("duplicates") + tally.sum_of("replays") == len(records) - k


@settings(max_examples=100, deadline=None)
@given(copies_of_k_conversions())
def test_a_replay_gives_the_same_conversion_ids(
    case: tuple[int, list[tuple[str, dict[str, Any]]]],
) -> None:
    _, order = case
    records = [rec(src, T0 + i, **kw) for i, (src, kw) in enumerate(order)]
    first, _ = run(records)
    again, _ = run(records)
    assert [r["conversion_id"] for r in first] == [r["conversion_id"] for r in again]


def test_a_merged_copy_read_again_is_not_merged_twice() -> None:
    d = Deduper({}, {}, merge_window=10)
    assert d.decide(rec("browser", T0), "browser").action == "hold"
    server = rec("server", T0 + 1)
    assert d.decide(copy.deepcopy(server), "server").merged
    again = d.decide(copy.deepcopy(server), "server")  # re-read after a crash
    assert again.action == "replay" and not again.merged
    assert d.decide(rec("server", T0 + 2), "server").merged  # a real retry still merges
    (out,) = d.flush()
    assert out["dedup"]["duplicates"] == 2
