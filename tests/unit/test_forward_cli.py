"""``convstream forward --input FILE`` and ``--dry-run DIR`` against the Graph-compatible
test endpoint on 127.0.0.1 (no broker needed): sent once each, rejected events in the
dead-letter file with Meta's code, bodies written and nothing sent on a dry run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bench.traffic import PIXELS, conversions
from streams import cli
from streams import forward as fwd
from tests.graph_endpoint import GraphEndpoint, scripted

META_NOW = 1795404000.0
TOKENS = {PIXELS[0]: "EAAcliTokenA", PIXELS[1]: "EAAcliTokenB"}


@pytest.fixture
def endpoint() -> Iterator[GraphEndpoint]:
    convs = conversions(30, seed=3)
    bad = fwd.capi_event(convs[7])["event_id"]
    ep = GraphEndpoint(
        dict(TOKENS),
        now=lambda: META_NOW,
        reject_event_ids=frozenset({bad}),
        faults=scripted(["http_500", "code_613"]),
        retry_after=0.1,
    ).start()
    yield ep
    ep.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, endpoint: GraphEndpoint) -> None:
    for k, v in {
        "CONVSTREAM_META_GRAPH_URL": endpoint.url,
        "CONVSTREAM_META_ACCESS_TOKENS": ",".join(f"{p}={t}" for p, t in TOKENS.items()),
        "CONVSTREAM_FORWARD_RETRY_BASE": "0.01",
        "CONVSTREAM_FORWARD_RETRY_MAX": "0.05",
    }.items():
        monkeypatch.setenv(k, v)


def write_input(tmp_path: Path) -> tuple[Path, list[dict[str, object]]]:
    convs = conversions(30, seed=3)
    src = tmp_path / "in" / "conversions.jsonl"
    src.parent.mkdir()
    src.write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in convs) + b"{broken\n")
    return src, convs


def test_input_file_sent_once_each_rejects_to_the_default_file(
    env: None, endpoint: GraphEndpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, convs = write_input(tmp_path)
    assert cli.main(["forward", "--input", str(src)]) == 0
    out = capsys.readouterr().out
    assert "31 records, 29 accepted, 2 dead-lettered" in out
    keys = [(a["event"]["event_name"], a["event"]["event_id"]) for a in endpoint.accepted]
    assert len(keys) == len(set(keys)) == 29
    dls = [
        json.loads(ln)
        for ln in (src.parent / "forward_dead_letters.jsonl").read_text().splitlines()
    ]
    assert [(d["reason"], d["offset"]) for d in dls] == [("rejected", 7), ("invalid_record", 30)]
    assert (dls[0]["code"], dls[0]["subcode"]) == (100, 2804007)
    # the requests that carried it: its batch (failed, throttled, rejected) and the halves
    assert dls[0]["attempts"] >= 5 and dls[1]["attempts"] == 0
    assert dls[0]["event"] == fwd.capi_event(convs[7])
    text = (src.parent / "forward_dead_letters.jsonl").read_text() + out
    assert not any(t in text for t in TOKENS.values())


def test_dead_letters_flag_and_dry_run(
    env: None, endpoint: GraphEndpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, _ = write_input(tmp_path)
    dry = tmp_path / "bodies"
    assert cli.main(["forward", "--input", str(src), "--dry-run", str(dry)]) == 0
    assert endpoint.requests == []  # nothing sent
    files = sorted(dry.iterdir())
    bodies = [json.loads(f.read_text()) for f in files]
    assert sum(len(b["data"]) for b in bodies) == 30
    assert {(b["pixel_id"], b.get("test_event_code")) for b in bodies} == {
        (PIXELS[0], None),
        (PIXELS[0], "TEST42"),
        (PIXELS[1], None),
        (PIXELS[1], "TEST42"),
    }
    assert all("access_token" not in b for b in bodies)
    assert not any(set(e) & fwd.CONVSTREAM_ONLY for b in bodies for e in b["data"])
    dl = tmp_path / "dl.jsonl"
    assert cli.main(["forward", "--input", str(src), "--dead-letters", str(dl)]) == 0
    assert len(dl.read_text().splitlines()) == 2


def test_bad_usage_and_rejected_token_exit_with_a_message(
    env: None,
    endpoint: GraphEndpoint,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cli.main(["forward", "--dry-run", str(tmp_path)]) == 2
    assert "--dry-run needs --input" in capsys.readouterr().err
    assert cli.main(["forward", "--input", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read --input file" in capsys.readouterr().err
    src, _ = write_input(tmp_path)
    monkeypatch.setenv(
        "CONVSTREAM_META_ACCESS_TOKENS", f"{PIXELS[0]}=EAAwrong,{PIXELS[1]}=EAAwrong2"
    )
    assert cli.main(["forward", "--input", str(src)]) == 1
    err = capsys.readouterr().err
    assert "access token (code 190" in err and "EAAwrong" not in err
