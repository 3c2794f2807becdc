"""SPEC §6 bullets, small explicit cases: one-to-one is exact, fbp compared on its first
four parts, test events dedupe only within their test_event_code, state compatibility
with values written before these rules, and the bound on registrations."""

from __future__ import annotations

import copy
from typing import Any

from streams.dedupe import MAX_REGISTERED, WINDOW, Deduper
from tests.unit.test_dedupe import T0, rec, run

FBP = "fb.1.1700000000000.123456"


# --- one-to-one is exact -------------------------------------------------------------
def test_a_browser_event_twinned_by_event_id_absorbs_no_id_less_server_copy() -> None:
    b = rec("browser", T0, event_id="order-1", fbp=FBP)
    twin = rec("server", T0 + 1, event_id="order-1", fbp=FBP)  # its server copy
    other = rec("server", T0 + 2, event_id=None, fbp=FBP)  # an id-less server event
    out, tally = run([b, twin, other])
    assert sorted(r["sources"][0] for r in out) == ["browser", "server"]
    assert any(r["event_id"] is None for r in out)  # the id-less one is its own conversion
    assert tally["duplicates", "event_id", "browser>server"] == 1
    assert tally["duplicates", "fbp", "browser>server"] == 0


def test_an_id_less_server_copy_before_the_twin_is_absorbed_and_the_twin_still_dedupes() -> None:
    # received_at order: the id-less copy comes before the twin, so it takes the browser
    b = rec("browser", T0, event_id="order-1", xid="crm-1")
    other = rec("server", T0 + 1, event_id=None, xid="crm-1")
    twin = rec("server", T0 + 2, event_id="order-1", xid="crm-1")
    out, tally = run([b, other, twin])
    assert [r["sources"] for r in out] == [["browser"]]
    assert tally["duplicates", "external_id", "browser>server"] == 1
    assert tally["duplicates", "event_id", "browser>server"] == 1


def test_each_id_less_server_copy_goes_to_the_earliest_free_browser_event() -> None:
    b1 = rec("browser", T0, event_id=None, fbp=FBP, ud={"em": ["1" * 64]})
    b2 = rec("browser", T0 + 1, event_id=None, fbp=FBP, ud={"em": ["2" * 64]})
    s1 = rec("server", T0 + 2, event_id=None, fbp=FBP)
    s2 = rec("server", T0 + 3, event_id=None, fbp=FBP)
    s3 = rec("server", T0 + 4, event_id=None, fbp=FBP)
    d = Deduper({}, {})
    assert d.decide(copy.deepcopy(b1), "browser").action == "emit"
    assert d.decide(copy.deepcopy(b2), "browser").action == "emit"
    first, second = (d.decide(copy.deepcopy(s), "server") for s in (s1, s2))
    assert (first.action, first.kept_cid) == ("duplicate", b1["conversion_id"])
    assert (second.action, second.kept_cid) == ("duplicate", b2["conversion_id"])
    assert d.decide(copy.deepcopy(s3), "server").action == "emit"  # nobody free is left


def test_the_earliest_browser_event_wins_across_fbp_and_external_id() -> None:
    by_xid = rec("browser", T0, event_id=None, xid="crm-2")
    by_fbp = rec("browser", T0 + 1, event_id=None, fbp=FBP)
    s = rec("server", T0 + 2, event_id=None, fbp=FBP, xid="crm-2")
    d = Deduper({}, {})
    d.decide(copy.deepcopy(by_xid), "browser")
    d.decide(copy.deepcopy(by_fbp), "browser")
    got = d.decide(copy.deepcopy(s), "server")
    assert (got.method, got.kept_cid) == ("external_id", by_xid["conversion_id"])


def test_a_browser_event_absorbed_through_one_key_is_absorbed_for_the_other() -> None:
    b = rec("browser", T0, event_id=None, fbp=FBP, xid="crm-3")
    s1 = rec("server", T0 + 1, event_id=None, fbp=FBP)
    s2 = rec("server", T0 + 2, event_id=None, xid="crm-3")
    out, tally = run([b, s1, s2])
    assert len(out) == 2 and tally.sum_of("duplicates") == 1


def test_id_less_copies_read_again_are_replays_not_new_decisions() -> None:
    b = rec("browser", T0, event_id=None, fbp=FBP)
    s = rec("server", T0 + 1, event_id=None, fbp=FBP)
    d = Deduper({}, {})
    assert d.decide(copy.deepcopy(b), "browser").action == "emit"
    assert d.decide(copy.deepcopy(s), "server").action == "duplicate"
    # ingest repeats a batch after a crash: the same two messages again
    assert d.decide(copy.deepcopy(b), "browser").action == "replay"  # not re-registered
    assert d.decide(copy.deepcopy(s), "server").action == "replay"  # not kept
    assert d.decide(rec("server", T0 + 2, event_id=None, fbp=FBP), "server").action == "emit"


# --- fbp on its first four parts -----------------------------------------------------
def test_an_fbp_appendix_on_either_copy_still_matches() -> None:
    for browser_fbp, server_fbp in ((FBP + ".AbCd", FBP), (FBP, FBP + ".AbCd")):
        b = rec("browser", T0, event_id=None, fbp=browser_fbp)
        s = rec("server", T0 + 1, event_id=None, fbp=server_fbp)
        out, tally = run([b, s])
        assert len(out) == 1 and tally["duplicates", "fbp", "browser>server"] == 1
    # two different appendices are the same fbp too; a different fourth part is not
    b = rec("browser", T0, event_id=None, fbp=FBP + ".AbCd")
    out, _ = run([b, rec("server", T0 + 1, event_id=None, fbp=FBP + ".XyZ")])
    assert len(out) == 1
    out, _ = run([b, rec("server", T0 + 1, event_id=None, fbp=FBP[:-1] + "7.AbCd")])
    assert len(out) == 2


def test_an_fbp_without_appendix_keeps_its_state_key() -> None:
    d = Deduper({}, {})
    d.decide(rec("browser", T0, event_id=None, fbp=FBP), "browser")
    d.decide(rec("browser", T0, event_id="e2", fbp=FBP + ".AbCd", name="Lead"), "browser")
    assert f"f|1|Purchase|{FBP}" in d.state and f"f|1|Lead|{FBP}" in d.state


# --- test events ---------------------------------------------------------------------
def test_a_test_event_never_dedupes_against_a_live_one_nor_the_reverse() -> None:
    for first, second in ((None, "TEST1"), ("TEST1", None)):
        # event_id rule, both sources
        out, tally = run([rec("browser", T0, code=first), rec("server", T0 + 1, code=second)])
        assert len(out) == 2 and tally.sum_of("duplicates") == 0
        # fallback rule
        b = rec("browser", T0, event_id=None, fbp=FBP, code=first)
        s = rec("server", T0 + 1, event_id=None, fbp=FBP, code=second)
        out, tally = run([b, s])
        assert len(out) == 2 and tally.sum_of("duplicates") == 0


def test_two_test_codes_are_apart_and_one_code_dedupes_within_itself() -> None:
    out, _ = run([rec("server", T0, code="A"), rec("server", T0 + 1, code="B")])
    assert len(out) == 2
    out, tally = run([rec("browser", T0, code="A"), rec("server", T0 + 1, code="A")])
    assert len(out) == 1 and tally["duplicates", "event_id", "browser>server"] == 1
    b = rec("browser", T0, event_id=None, fbp=FBP, code="A")
    out, _ = run([b, rec("server", T0 + 1, event_id=None, fbp=FBP, code="B")])
    assert len(out) == 2
    out, _ = run([b, rec("server", T0 + 1, event_id=None, fbp=FBP, code="A")])
    assert len(out) == 1
    # codes that could collide if concatenated naively stay apart
    out, _ = run([rec("server", T0, code="A|B"), rec("server", T0 + 1, code="A", name="B|x")])
    assert len(out) == 2


def test_live_state_keys_are_unchanged_and_test_keys_are_namespaced() -> None:
    d = Deduper({}, {})
    live = rec("browser", T0, event_id="e", fbp=FBP, xid="x")
    d.decide(copy.deepcopy(live), "browser")
    xid = live["user_data"]["external_id"][0]
    cid = live["conversion_id"]
    assert set(d.state) == {
        "e|1|Purchase|e",
        f"f|1|Purchase|{FBP}",
        f"x|1|Purchase|{xid}",
        f"b|{cid}",
    }
    d.decide(rec("browser", T0, event_id="e", fbp=FBP, xid="x", code="T"), "browser")
    assert len(d.state) == 8 and not any(k.startswith("h|") for k in d.state)


def test_a_held_test_conversion_does_not_overwrite_a_held_live_one() -> None:
    # same event id, so the same conversion_id (SPEC formula): held apart all the same
    out, _ = run([rec("browser", T0), rec("server", T0 + 1, code="T")], merge_window=10)
    assert sorted(str(r["test_event_code"]) for r in out) == ["None", "T"]


# --- state written before these rules ------------------------------------------------
def test_values_written_before_the_upgrade_are_still_read() -> None:
    b = rec("browser", T0, event_id=None, fbp=FBP)
    cid = b["conversion_id"]
    state: dict[str, Any] = {
        f"f|1|Purchase|{FBP}": {"t": T0, "cid": cid},
        f"b|{cid}": {"t": T0, "absorbed": False},
    }
    d = Deduper(state, {})
    assert d.decide(rec("server", T0 + 1, event_id=None, fbp=FBP), "server").kept_cid == cid
    state[f"b|{cid}"] = {"t": T0, "absorbed": True}
    d = Deduper(state, {})
    assert d.decide(rec("server", T0 + 2, event_id=None, fbp=FBP), "server").action == "emit"


# --- expiry and bounds ---------------------------------------------------------------
def test_every_value_has_t_and_lists_drop_entries_older_than_the_window() -> None:
    d = Deduper({}, {})
    d.decide(rec("browser", T0, event_id=None, fbp=FBP), "browser")
    d.decide(rec("browser", T0 + WINDOW + 1, event_id=None, fbp=FBP), "browser")
    reg = d.state[f"f|1|Purchase|{FBP}"]
    assert reg["t"] == T0 + WINDOW + 1 and [e[0] for e in reg["l"]] == [T0 + WINDOW + 1]
    assert all("t" in v for v in d.state.values())


def test_registrations_under_one_key_are_bounded() -> None:
    d = Deduper({}, {})
    for i in range(MAX_REGISTERED + 5):
        d.decide(rec("browser", T0 + i, event_id=None, fbp=FBP), "browser")
    reg = d.state[f"f|1|Purchase|{FBP}"]
    assert len(reg["l"]) == MAX_REGISTERED and reg["l"][0][0] == T0 + 5  # oldest dropped
    # the earliest remembered free browser event absorbs
    got = d.decide(rec("server", T0 + 100, event_id=None, fbp=FBP), "server")
    assert got.kept_at == T0 + 5
