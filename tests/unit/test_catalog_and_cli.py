"""The ads catalog (streams/catalog.py), the offline catalog/attribution path
(streams/offline.py) and the ``convstream specs`` / ``convstream process`` commands."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from streams import cli, codes, offline, runtime
from streams import settings as settings_mod
from streams.catalog import Catalog
from streams.pipeline import Result
from streams.tally import Tally
from tests.helpers import UA, server_event, server_message

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
EXAMPLES = SCHEMAS / "examples"
AD_FILE = EXAMPLES / "ad.json"
CATALOG_FILE = EXAMPLES / "ads_catalog.jsonl"
EVENT_FILE = EXAMPLES / "conversion.json"
PIXEL_FILE = EXAMPLES / "pixel_hits.jsonl"
SERVER_FILE = EXAMPLES / "server_events.jsonl"
NOW = 1795400400.0
CATALOG_TOPIC = "ads.catalog"
PURCHASE_SPECS = {"ad_id": "23851", "conversion_spec": True, "tracking_specs": [2]}
SECONDS_FBC = "fb.1.1795300000.IwAR2xYzAbC"

_SCHEMA = {
    n: json.loads((SCHEMAS / f"{n}.schema.json").read_text())
    for n in ("dead_letter", "attribution_candidate", "conversion")
}
_REGISTRY: Registry[Any] = Registry().with_resources(
    (s["$id"], Resource.from_contents(s)) for s in _SCHEMA.values()
)


def assert_valid(name: str, instance: Any) -> None:
    # through JSON, as the record is written
    instance = orjson.loads(orjson.dumps(instance))
    errs = list(Draft202012Validator(_SCHEMA[name], registry=_REGISTRY).iter_errors(instance))
    assert not errs, f"not a valid {name}: " + "; ".join(
        f"{list(e.absolute_path)}: {e.message}" for e in errs
    )


def ad(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(AD_FILE.read_text())
    value.update(changes)
    return value


def ad_bytes(**changes: Any) -> bytes:
    return orjson.dumps(ad(**changes))


def catalog_lines() -> list[bytes]:
    return [ln for ln in CATALOG_FILE.read_bytes().split(b"\n") if ln.strip()]


def conversion_event(c: Catalog, ad_id: str) -> tuple[str, ...]:
    resolved = c.get(ad_id)
    assert resolved is not None and resolved.conversion_spec is not None
    return tuple(resolved.conversion_spec.spec["offsite_conversion.event"])


# --- Catalog.apply -------------------------------------------------------------------------


def test_valid_ad_is_stored_and_resolved() -> None:
    c = Catalog()
    assert len(c) == 0
    assert c.apply(b"23851", AD_FILE.read_bytes()) is None
    assert len(c) == 1
    resolved = c.get("23851")
    assert resolved is not None
    assert resolved.ad.ad_id == "23851"
    assert resolved.ad.objective == "CONVERSIONS"
    assert resolved.conversion_spec is not None
    assert dict(resolved.conversion_spec.spec) == {
        "action.type": ("offsite_conversion",),
        "fb_pixel": ("1234567890",),
        "offsite_conversion.event": ("Purchase",),
    }
    assert [rs.source for rs in resolved.tracking_specs][-1] == "custom[0]"
    assert len(resolved.tracking_specs) == 3
    assert c.get("23852") is None


def test_catalog_file_lines_are_stored_by_ad_id() -> None:
    c = Catalog()
    for line in catalog_lines():
        assert c.apply(None, line) is None
    assert len(c) == 2
    assert sorted(c.ads) == ["23851", "23852"]
    assert conversion_event(c, "23851") == ("Purchase",)
    assert conversion_event(c, "23852") == ("Lead",)


def test_update_replaces_the_ad() -> None:
    c = Catalog()
    assert c.apply(b"23851", ad_bytes()) is None
    assert conversion_event(c, "23851") == ("Purchase",)
    lead = ad_bytes(promoted_object={"pixel_id": "1234567890", "custom_event_type": "LEAD"})
    assert c.apply(b"23851", lead) is None
    assert len(c) == 1
    assert conversion_event(c, "23851") == ("Lead",)
    resolved = c.get("23851")
    assert resolved is not None and resolved.ad.custom_event_type == "LEAD"


def test_tombstone_deletes_by_key() -> None:
    c = Catalog()
    for line in catalog_lines():
        c.apply(None, line)
    assert c.apply(b"23851", None) is None
    assert len(c) == 1
    assert c.get("23851") is None
    assert c.get("23852") is not None
    # deleting an ad the catalog does not hold is not an error
    assert c.apply(b"99999", None) is None
    assert len(c) == 1


@pytest.mark.parametrize("key", [None, b""])
def test_tombstone_without_key_is_invalid_ad(key: bytes | None) -> None:
    c = Catalog()
    c.apply(b"23851", ad_bytes())
    error = c.apply(key, None)
    assert error is not None
    assert error.code == codes.INVALID_AD == "invalid_ad"
    assert error.field is None
    assert len(c) == 1


@pytest.mark.parametrize("value", [b"this is not JSON", b'{"ad_id": "23851",', b"\xff\xfe"])
def test_non_json_value_is_invalid_ad_without_field(value: bytes) -> None:
    c = Catalog()
    error = c.apply(b"23851", value)
    assert error is not None
    assert (error.code, error.field) == ("invalid_ad", None)
    assert "not JSON" in error.message
    assert len(c) == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"objective": None}, "objective"),
        (
            {"promoted_object": {"pixel_id": "x1", "custom_event_type": "PURCHASE"}},
            "promoted_object.pixel_id",
        ),
        ({"tracking_specs": [{"fb_pixel": ["1"]}]}, 'tracking_specs[0]["action.type"]'),
    ],
)
def test_malformed_ad_is_rejected_and_the_stored_version_kept(
    changes: dict[str, Any], field: str
) -> None:
    c = Catalog()
    assert c.apply(b"23851", ad_bytes()) is None
    before = c.get("23851")
    bad = ad(**changes)
    if changes.get("objective", "") is None:
        del bad["objective"]
    error = c.apply(b"23851", orjson.dumps(bad))
    assert error is not None
    assert error.code == "invalid_ad"
    assert error.field == field
    assert error.message.startswith(f"{field}: ")
    assert len(c) == 1
    assert c.get("23851") is before
    assert conversion_event(c, "23851") == ("Purchase",)


def test_key_must_equal_ad_id() -> None:
    c = Catalog()
    error = c.apply(b"23852", ad_bytes())  # the ad is 23851
    assert error is not None
    assert (error.code, error.field) == ("invalid_ad", "ad_id")
    assert len(c) == 0
    assert c.get("23851") is None and c.get("23852") is None


def test_key_mismatch_keeps_the_ad_stored_under_the_key() -> None:
    c = Catalog()
    assert c.apply(b"23852", catalog_lines()[1]) is None
    error = c.apply(b"23852", ad_bytes())
    assert error is not None and error.field == "ad_id"
    assert conversion_event(c, "23852") == ("Lead",)
    assert len(c) == 1


# --- offline.load_catalog --------------------------------------------------------------------


def test_load_catalog_dead_letters_malformed_lines() -> None:
    no_objective = ad()
    del no_objective["objective"]
    lines = [
        catalog_lines()[0],  # 0
        b"",  # 1: blank
        b"this is not JSON",  # 2
        orjson.dumps(no_objective),  # 3
        ad_bytes(promoted_object={"pixel_id": "x1", "custom_event_type": "PURCHASE"}),  # 4
        b"   \t",  # 5: blank
        catalog_lines()[1],  # 6
    ]
    tally = Tally()
    catalog, dead = offline.load_catalog(CATALOG_TOPIC, b"\n".join(lines) + b"\n", NOW, tally)
    assert len(catalog) == 2
    assert sorted(catalog.ads) == ["23851", "23852"]
    assert [d["offset"] for d in dead] == [2, 3, 4]
    assert [d["errors"][0]["field"] for d in dead] == [
        None,
        "objective",
        "promoted_object.pixel_id",
    ]
    for d in dead:
        assert d["source_topic"] == CATALOG_TOPIC
        assert d["partition"] is None
        assert d["errors"][0]["code"] == "invalid_ad"
        assert len(d["errors"]) == 1
        assert d["rejected_at"] == NOW
        assert_valid("dead_letter", d)
    assert tally[("catalog_rejected",)] == 3
    assert tally.sum_of("catalog_rejected") == 3


def test_load_catalog_blank_lines_only_and_later_line_replaces() -> None:
    tally = Tally()
    catalog, dead = offline.load_catalog(CATALOG_TOPIC, b"\n  \n\n", NOW, tally)
    assert (len(catalog), dead, tally[("catalog_rejected",)]) == (0, [], 0)
    lead = ad_bytes(promoted_object={"pixel_id": "1234567890", "custom_event_type": "LEAD"})
    catalog, dead = offline.load_catalog(CATALOG_TOPIC, ad_bytes() + b"\n" + lead, NOW, tally)
    assert dead == []
    assert len(catalog) == 1
    assert conversion_event(catalog, "23851") == ("Lead",)


# --- offline.process with a catalog ---------------------------------------------------------


def _process(catalog: Catalog | None, extra_server: bytes = b"") -> Result:
    s = settings_mod.from_env({})
    pixel = offline.read_lines("browser", s.topics.pixel_raw, PIXEL_FILE.read_bytes())
    server = offline.read_lines(
        "server", s.topics.server_raw, SERVER_FILE.read_bytes() + extra_server
    )
    return offline.process(s, offline.ordered(pixel, server), NOW, catalog)


def _example_catalog() -> Catalog:
    catalog, dead = offline.load_catalog(CATALOG_TOPIC, CATALOG_FILE.read_bytes(), NOW, Tally())
    assert dead == []
    return catalog


def test_process_candidates_are_valid_and_carry_specs_with_a_catalog() -> None:
    result = _process(_example_catalog())
    assert len(result.candidates) == 3
    for cand in result.candidates:
        assert_valid("attribution_candidate", cand)
    by_event = {c["event_name"]: c for c in result.candidates}
    assert sorted(by_event) == ["AddToCart", "PageView", "Purchase"]
    purchase = by_event["Purchase"]
    assert purchase["specs"] == PURCHASE_SPECS
    assert purchase["fbclid"] == "IwAR2xYzAbC"
    assert purchase["click_time"] == 1795300000
    assert purchase["landing"]["ad_id"] == "23851"
    # a PageView is not the ad's Purchase conversion, but its pixel tracking spec matches
    assert by_event["PageView"]["specs"] == {
        "ad_id": "23851",
        "conversion_spec": False,
        "tracking_specs": [2],
    }
    # the AddToCart landing has no ad_id: no lookup
    assert by_event["AddToCart"]["specs"] is None
    assert by_event["AddToCart"]["fbclid"] == "IwAR9LandingClick"
    ids = {c["conversion_id"] for c in result.conversions}
    assert {c["conversion_id"] for c in result.candidates} <= ids
    assert result.tally[("spec_lookups", "known")] == 2
    assert result.tally[("spec_matches", "conversion")] == 1


def test_process_without_catalog_has_no_specs() -> None:
    result = _process(None)
    assert len(result.candidates) == 3
    assert [c["specs"] for c in result.candidates] == [None, None, None]
    for cand in result.candidates:
        assert_valid("attribution_candidate", cand)
    assert result.tally[("spec_lookups", "unknown_ad")] == 2
    assert result.tally[("spec_lookups", "known")] == 0


def test_process_with_an_empty_catalog_equals_no_catalog() -> None:
    with_empty = _process(Catalog()).candidates
    without = _process(None).candidates
    assert with_empty == without


def test_process_keeps_fbclid_byte_exact() -> None:
    result = _process(_example_catalog())
    fbclids = sorted(c["fbclid"] for c in result.candidates)
    assert fbclids == ["IwAR2xYzAbC", "IwAR2xYzAbC", "IwAR9LandingClick"]
    assert "iwar2xyzabc" not in fbclids


def test_fbc_time_in_seconds_is_warned_and_used_as_click_time() -> None:
    extra = server_message(
        server_event(
            event_id="order-2002",
            user_data={"em": "buyer@example.org", "client_user_agent": UA, "fbc": SECONDS_FBC},
        )
    )
    result = _process(_example_catalog(), extra + b"\n")
    warned = [c for c in result.conversions if "fbc_time_in_seconds" in c["warnings"]]
    assert len(warned) == 1
    (conv,) = warned
    assert conv["user_data"]["fbc"] == SECONDS_FBC
    assert conv["event_id"] == "order-2002"
    assert_valid("conversion", conv)
    (cand,) = [c for c in result.candidates if c["conversion_id"] == conv["conversion_id"]]
    assert cand["click_time"] == 1795300000
    assert cand["fbclid"] == "IwAR2xYzAbC"
    assert cand["lag_seconds"] == conv["event_time"] - 1795300000
    assert cand["specs"] == PURCHASE_SPECS
    assert_valid("attribution_candidate", cand)
    assert len(result.candidates) == 4
    # the example Purchase's fbc is in milliseconds: no warning there
    others = [c for c in result.conversions if c is not conv]
    assert all("fbc_time_in_seconds" not in c["warnings"] for c in others)


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Default settings whatever the environment, and no process-wide GC tuning."""
    for name in list(os.environ):
        if name.startswith("CONVSTREAM_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    monkeypatch.setattr(runtime, "tune_gc", lambda: None)


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def test_specs_resolve_prints_the_resolved_ad(
    clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["specs", "resolve", str(AD_FILE)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ad_id"] == "23851"
    assert out["conversion_spec"] == {
        "action.type": ["offsite_conversion"],
        "fb_pixel": ["1234567890"],
        "offsite_conversion.event": ["Purchase"],
    }
    assert len(out["tracking_specs"]) == 3
    assert out["tracking_specs"][2] == {
        "action.type": ["offsite_conversion"],
        "fb_pixel": ["1234567890"],
    }


def test_specs_match_prints_lines(clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["specs", "match", str(AD_FILE), str(EVENT_FILE)]) == 0
    out = capsys.readouterr().out
    conv_lines = [ln for ln in out.splitlines() if ln.strip().startswith("conversion_spec")]
    assert len(conv_lines) == 1
    assert "MATCH" in conv_lines[0]
    assert "tracking_specs [2] matched, conversion_spec matched" in out
    assert out.count(": MATCH") == 2  # tracking_specs[2] and the conversion spec


def test_specs_match_json(clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["specs", "match", str(AD_FILE), str(EVENT_FILE), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["match"] == PURCHASE_SPECS
    assert report["conversion_spec"]["matched"] is True
    assert [t["matched"] for t in report["tracking_specs"]] == [False, False, True]


def test_specs_match_json_for_an_ad_with_another_event(
    clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lead_ad = write_json(tmp_path / "lead.json", json.loads(catalog_lines()[1]))
    assert cli.main(["specs", "match", str(lead_ad), str(EVENT_FILE), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["match"] == {"ad_id": "23852", "conversion_spec": False, "tracking_specs": [2]}


@pytest.mark.parametrize("cmd", [["resolve"], ["match"]])
def test_specs_malformed_ad_names_file_and_field(
    clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], cmd: list[str]
) -> None:
    bad = ad()
    del bad["objective"]
    path = write_json(tmp_path / "bad_ad.json", bad)
    argv = ["specs", *cmd, str(path)] + ([str(EVENT_FILE)] if cmd == ["match"] else [])
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(path) in captured.err
    assert "objective" in captured.err


def test_specs_bad_pixel_id_in_ad_names_the_field(
    clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(
        tmp_path / "ad.json",
        ad(promoted_object={"pixel_id": "x1", "custom_event_type": "PURCHASE"}),
    )
    assert cli.main(["specs", "resolve", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "promoted_object.pixel_id" in err


@pytest.mark.parametrize("which", ["ad", "event"])
def test_specs_non_json_file(
    clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("this is not JSON")
    files = [junk, EVENT_FILE] if which == "ad" else [AD_FILE, junk]
    assert cli.main(["specs", "match", *map(str, files)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{which} file {junk} is not JSON" in captured.err


@pytest.mark.parametrize("which", ["ad", "event"])
def test_specs_missing_file(
    clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    missing = tmp_path / "nope.json"
    files = [missing, EVENT_FILE] if which == "ad" else [AD_FILE, missing]
    assert cli.main(["specs", "match", *map(str, files)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"cannot read {which} file {missing}" in captured.err


def test_specs_malformed_event_names_event_file_and_field(
    clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = json.loads(EVENT_FILE.read_text())
    event["pixel_id"] = "x1"
    path = write_json(tmp_path / "event.json", event)
    for extra in ([], ["--json"]):
        assert cli.main(["specs", "match", str(AD_FILE), str(path), *extra]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert str(path) in captured.err
        assert str(AD_FILE) not in captured.err
        assert "pixel_id" in captured.err


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(ln) for ln in path.read_bytes().splitlines()]


def test_process_command_writes_candidates_with_specs(
    clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["process", "--pixel", str(PIXEL_FILE), "--server", str(SERVER_FILE),
            "--catalog", str(CATALOG_FILE), "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    summary = capsys.readouterr().out
    assert "3 attribution candidates" in summary
    assert "5 conversions" in summary
    lines = (out / "attribution_candidates.jsonl").read_bytes().splitlines()
    assert len(lines) == 3
    candidates = [orjson.loads(ln) for ln in lines]
    for cand in candidates:
        assert_valid("attribution_candidate", cand)
    (purchase,) = [c for c in candidates if c["event_name"] == "Purchase"]
    assert purchase["specs"] == PURCHASE_SPECS
    conv_ids = {c["conversion_id"] for c in _read_jsonl(out / "conversions.jsonl")}
    assert len(conv_ids) == 5
    assert {c["conversion_id"] for c in candidates} <= conv_ids
    dead = _read_jsonl(out / "dead_letters.jsonl")
    assert [d["errors"][0]["code"] for d in dead] == ["missing_currency", "malformed_message"]


def test_process_command_dead_letters_bad_catalog_lines_first(
    clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_bytes(CATALOG_FILE.read_bytes() + b"\nnot an ad\n")
    out = tmp_path / "out"
    argv = ["process", "--pixel", str(PIXEL_FILE), "--server", str(SERVER_FILE),
            "--catalog", str(catalog), "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    assert "3 dead letters" in capsys.readouterr().out
    dead = _read_jsonl(out / "dead_letters.jsonl")
    assert len(dead) == 3
    first = dead[0]
    assert (first["source_topic"], first["partition"], first["offset"]) == ("ads.catalog", None, 3)
    assert first["errors"][0]["code"] == "invalid_ad"
    assert_valid("dead_letter", first)
    # the good lines were still loaded
    (purchase,) = [
        c
        for c in _read_jsonl(out / "attribution_candidates.jsonl")
        if c["event_name"] == "Purchase"
    ]
    assert purchase["specs"] == PURCHASE_SPECS


def test_process_command_without_catalog_writes_no_specs(
    clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["process", "--pixel", str(PIXEL_FILE), "--server", str(SERVER_FILE),
            "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    assert "3 attribution candidates" in capsys.readouterr().out
    candidates = _read_jsonl(out / "attribution_candidates.jsonl")
    assert [c["specs"] for c in candidates] == [None, None, None]


def test_process_command_missing_catalog_file(
    clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    missing = tmp_path / "missing.jsonl"
    argv = ["process", "--pixel", str(PIXEL_FILE), "--server", str(SERVER_FILE),
            "--catalog", str(missing), "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert f"cannot read --catalog file {missing}" in captured.err
    assert captured.out == ""
    assert not (out / "attribution_candidates.jsonl").exists()


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
    st.text(max_size=12),
)  # fmt: skip
_VALUES = st.recursive(
    _SCALARS,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)
_AD_KEYS = st.sampled_from(
    ["ad_id", "objective", "optimization_goal", "billing_event", "creative_type",
     "promoted_object", "creative", "tracking_specs", "other"]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_AD_KEYS, _VALUES, max_size=6), st.booleans())
def test_catalog_apply_never_raises_on_any_json(over: dict[str, Any], on_example: bool) -> None:
    example = json.loads((EXAMPLES / "ad.json").read_text())
    obj = {**example, **over} if on_example else over
    catalog = Catalog()
    error = catalog.apply(None, orjson.dumps(obj))
    assert (error is None) == (len(catalog) == 1)
    if error is not None:
        assert error.code == "invalid_ad" and error.message


def test_the_worker_fixes_glibc_s_mmap_threshold_where_there_is_glibc() -> None:
    import platform

    from streams.runtime import tune_malloc

    assert tune_malloc() is (platform.libc_ver()[0] == "glibc")


MALLINFO2_PROBE = """
import ctypes, sys
from streams.runtime import trim_malloc, tune_malloc
FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
          "uordblks", "fordblks", "keepcost")
class MallInfo2(ctypes.Structure):  # struct mallinfo2 (malloc.h): all ten fields
    _fields_ = [(n, ctypes.c_size_t) for n in FIELDS]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
tuned = tune_malloc()
blocks = [bytearray(4096) for _ in range(1024)]
grown = mallinfo2().arena
del blocks
kept = mallinfo2().arena
trimmed = trim_malloc()
print(tuned, trimmed, grown, kept, mallinfo2().arena)
"""


def test_after_tune_malloc_frees_do_not_shrink_the_heap_until_it_is_trimmed() -> None:
    """With only the mmap threshold fixed, glibc's trim threshold stayed at 128 KiB and
    every batch's frees shrank the heap (sbrk) for the next batch to grow it again.
    Tuned: 4 MiB of freed 4 KiB blocks (a batch's worth, below TRIM_THRESHOLD) stay in
    the heap; trim_malloc gives them back. Run in a fresh interpreter: there the blocks
    sit at the top of the heap, which is the only part `arena` can shrink by (in a long
    test process they may fill holes lower down)."""
    import platform
    import subprocess
    import sys

    from streams.runtime import tune_malloc

    if platform.libc_ver()[0] != "glibc":
        assert tune_malloc() is False  # nothing to tune (nor to check) elsewhere
        return
    out = subprocess.run(
        [sys.executable, "-c", MALLINFO2_PROBE],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout.split()
    assert out[:2] == ["True", "True"]
    grown, kept, trimmed = (int(v) for v in out[2:])
    assert kept >= grown - (1 << 20)  # kept for the next batch
    assert trimmed <= grown - (2 << 20)  # given back when trimmed


def test_freed_heap_pages_go_back_to_the_system_where_there_is_glibc() -> None:
    import platform

    from streams.runtime import trim_malloc

    glibc = platform.libc_ver()[0] == "glibc"
    blocks = [bytearray(4096) for _ in range(20_000)]  # ~80 MiB of small heap blocks
    del blocks  # freed, but glibc keeps the pages mapped until it is trimmed
    assert trim_malloc() is glibc
