"""Each fast path of the per-event code gives exactly what its slow path gives.

- pii: a single string under a hashed key (the memo, country included) against the same
  value as a one-element list (the general path), with the memo cold and warm;
- validate: the weak-key short cut against the rule as SPEC §3 states it;
- quality: the per-shape score memo against the formula;
- pipeline: the per-day year against time.gmtime;
- validate: a remembered valid pixel id against the regex.
"""

from __future__ import annotations

import time
from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from streams import pii, pipeline, quality, validate
from streams.pii import HASHED_KEYS, PLAIN_KEYS, hash_user_data
from tests.unit.test_pii import REALISTIC, REGION, YEAR

_SINGLE = st.one_of(REALISTIC, st.text(max_size=20), st.sampled_from([" us ", "GB", "Canada"]))
_HASHED_UD = st.dictionaries(st.sampled_from(sorted(HASHED_KEYS)), _SINGLE, max_size=8)


@settings(max_examples=500, deadline=None)
@given(_HASHED_UD, REGION, YEAR, st.booleans())
def test_single_strings_equal_one_element_lists(
    ud: dict[str, str], region: str | None, year: int | None, cold: bool
) -> None:
    if cold:
        pii._MEMO.clear()
    fast = hash_user_data(ud, default_phone_country=region, this_year=year)
    again = hash_user_data(ud, default_phone_country=region, this_year=year)  # memo warm
    slow = hash_user_data(
        {k: [v] for k, v in ud.items()}, default_phone_country=region, this_year=year
    )
    assert fast == again == slow


_KEYS = st.frozensets(
    st.sampled_from(sorted(HASHED_KEYS | PLAIN_KEYS | {"external_id", "lead_id"})), max_size=6
)


@settings(max_examples=1000, deadline=None)
@given(_KEYS)
def test_weak_key_short_cut_equals_the_rule(keys: frozenset[str]) -> None:
    expected = not keys or any(keys <= weak for weak in validate.WEAK_KEY_SETS)
    assert (validate.customer_information(keys) is not None) is expected


def _decimal_score(keys: list[str]) -> float:
    """SPEC §7's score in decimal arithmetic: sum of weights, capped at 10, half up."""
    total = min(Decimal(10), sum((Decimal(str(quality.WEIGHTS[k])) for k in keys), Decimal(0)))
    return float(total.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from([*quality.WEIGHTS, "other"]), st.sampled_from(["x", ""])))
def test_match_quality_memo_equals_the_formula(ud: dict[str, str]) -> None:
    keys = sorted(k for k, v in ud.items() if v and k in quality.WEIGHTS)
    score = _decimal_score(keys)
    expected = {"score": score, "keys": keys}
    assert quality.match_quality(ud) == expected
    first = quality.match_quality(ud)
    first["keys"].append("mutated")  # a caller changing its record leaves the memo alone
    assert quality.match_quality(ud) == expected


@settings(max_examples=1000, deadline=None)
@given(st.floats(min_value=0, max_value=1e11 - 1, allow_nan=False))
def test_year_equals_gmtime(received_at: float) -> None:
    assert pipeline._year(received_at) == time.gmtime(received_at).tm_year


@given(st.text(alphabet="0123456789a\u0661 ", min_size=0, max_size=22))
def test_remembered_pixel_ids_are_judged_as_by_the_regex(raw: str) -> None:
    first = validate.pixel_id(raw, "id", None)
    second = validate.pixel_id(raw, "id", None)
    valid = validate._PIXEL_RE.fullmatch(raw) is not None
    assert first == second
    assert (first == (raw, [])) is valid


def test_tally_counts_like_a_counter() -> None:
    from collections import Counter

    from streams.tally import Tally

    t, c = Tally(), Counter[tuple[str, ...]]()
    for key in [("a",), ("b", "x"), ("a",), ("c",)] * 3:
        t[key] += 1
        c[key] += 1
    t[("d",)] = 5
    c[("d",)] = 5
    assert t == c
    assert t[("missing",)] == 0 and ("missing",) not in t
    assert t.sum_of("a") == 6
    del t[("d",)]
    assert ("d",) not in t


def test_batch_without_cyclic_gc_restores_the_collector() -> None:
    import gc

    import pytest

    from streams.runtime import batch_without_cyclic_gc

    assert gc.isenabled()
    with batch_without_cyclic_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), batch_without_cyclic_gc():
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with batch_without_cyclic_gc():
            pass
        assert not gc.isenabled()  # left as it was
    finally:
        gc.enable()
