"""SPEC §6 decisions: the event_id rule, the one-to-one fbp/external_id fallback, the
48 h window, the merge window (small explicit cases; the §6 bullets on order,
one-to-one, fbp parts and test events: test_dedup_rules.py, test_dedup_model.py)."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

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
    code: str | None = None,
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
        "test_event_code": code,
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


def test_in_received_at_order_the_earlier_copy_is_kept() -> None:
    # SPEC §6: "first" is by received_at; process (and the worker's reorder buffer)
    # feed copies in that order, so the browser copy received at T0 is the kept one
    records = sorted([rec("server", T0 + 5), rec("browser", T0)], key=lambda r: r["received_at"])
    out, tally = run(records)
    assert len(out) == 1 and out[0]["sources"] == ["browser"]
    assert tally["duplicates", "event_id", "browser>server"] == 1


def test_a_copy_out_of_received_at_order_is_decided_without_loss() -> None:
    # later than the reorder bound: the event_id rule still finds it within the window
    # of the kept copy (one conversion, nothing lost) ...
    out, tally = run([rec("server", T0 + 5), rec("browser", T0)])
    assert len(out) == 1 and out[0]["sources"] == ["server"]
    assert tally["duplicates", "event_id", "server>browser"] == 1
    # ... but the fallback never lets a browser event received after a server copy
    # absorb it (SPEC: the absorbing browser copy is received no later)
    b = rec("browser", T0 + 5, event_id=None, fbp="fb.1.1.5")
    s = rec("server", T0 + 4, event_id=None, fbp="fb.1.1.5")
    out, tally = run([b, s])
    assert len(out) == 2 and tally.sum_of("duplicates") == 0


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


def test_a_merged_conversion_keeps_limited_data_use_from_either_copy() -> None:
    """The server copy came first without LDU; the browser hit said dpo=LDU (with a
    country and state): merged, the conversion carries it (SPEC §2.1: a hit that says
    LDU never comes out without it). Options are not repeated, the first copy's country
    and state win, and a merge of copies without options adds none."""
    s = rec("server", T0, ud={"em": ["e" * 64]})
    b = rec("browser", T0 + 2, ud={"fbp": "fb.1"})
    b["data_processing_options"] = ["LDU"]
    b["data_processing_options_country"] = 0
    b["data_processing_options_state"] = 0
    (c,) = run([s, b], merge_window=10)[0]
    assert c["sources"] == ["browser", "server"]
    assert c["data_processing_options"] == ["LDU"]
    assert c["data_processing_options_country"] == 0
    assert c["data_processing_options_state"] == 0

    s2 = dict(rec("server", T0), data_processing_options=["LDU"])
    s2["data_processing_options_country"] = 1
    (c2,) = run([s2, b], merge_window=10)[0]
    assert c2["data_processing_options"] == ["LDU"]
    assert c2["data_processing_options_country"] == 1  # the kept copy's
    assert c2["data_processing_options_state"] == 0  # it had none: the other's

    (c3,) = run([rec("server", T0), rec("browser", T0 + 2)], merge_window=10)[0]
    assert "data_processing_options" not in c3
    assert "data_processing_options_country" not in c3


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


# Properties over random sets of conversions (against a reference model of SPEC §6,
# in received_at order and any order that keeps it): tests/unit/test_dedup_model.py.
# conversion_id formulas against an independent computation:
# tests/unit/test_conversion_id.py.


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
