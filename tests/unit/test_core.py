"""The compiled core (mypyc) and the pure one: which runs, when a build counts as
current, and that both give the same outputs.

``make test`` runs the unit and conformance tests twice, with ``CONVSTREAM_CORE=compiled``
and ``CONVSTREAM_CORE=pure``; the first test here proves each run used the core it
names. The differential test runs a corpus through both cores in child processes.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import streams
from streams import core

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "streams"


def test_the_core_named_in_the_environment_is_the_one_running() -> None:
    want = os.environ.get(core.ENV, "auto")
    running = core.running()
    assert running == streams.CORE
    if want in ("compiled", "pure"):
        assert running == want
    for name in core.COMPILED:
        path = str(importlib.import_module(f"streams.{name}").__file__)
        assert path.endswith(".py") == (running == "pure"), path


_SUFFIX = ".cpython-311-x86_64-linux-gnu.so"


@pytest.fixture
def fake_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package folder holding a complete, current build (empty files)."""
    monkeypatch.setattr("importlib.machinery.EXTENSION_SUFFIXES", [_SUFFIX])
    here = tmp_path / "streams"
    here.mkdir()
    sources = {}
    for name in core.COMPILED:
        (here / f"{name}.py").write_text(f"# {name}\n")
        (here / f"{name}{_SUFFIX}").write_bytes(b"")
        sources[name] = hashlib.sha256(f"# {name}\n".encode()).hexdigest()
    (here / core.STAMP).write_text(json.dumps({"sources": sources}))
    return here


def test_a_build_is_current_until_a_source_changes(fake_build: Path) -> None:
    assert core._built(fake_build) is None
    (fake_build / "pii.py").write_text("# pii, edited\n")
    assert "pii.py changed" in str(core._built(fake_build))


def test_a_build_without_its_stamp_or_an_extension_is_not_current(fake_build: Path) -> None:
    (fake_build / f"dedupe{_SUFFIX}").unlink()
    assert "dedupe is not compiled" in str(core._built(fake_build))
    (fake_build / core.STAMP).unlink()
    assert core._built(fake_build) == "no compiled build is installed"


def test_an_unknown_choice_is_refused() -> None:
    env = {**os.environ, core.ENV: "fast"}
    proc = subprocess.run(
        [sys.executable, "-c", "import streams"], env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "CONVSTREAM_CORE must be auto, pure or compiled" in proc.stderr


def test_the_compiled_modules_import_no_kafka_or_faust() -> None:
    banned = {"faust", "aiokafka", "mode", "agents"}
    for name in core.COMPILED:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                tops = {node.module.split(".")[0]}
            else:
                continue
            assert not tops & banned, f"streams/{name}.py imports {tops & banned}"


# The corpus: bench traffic through `process` (every stage), and user_data values
# chosen where a compiler's own string methods could differ from CPython's (case
# mappings with context or expansion, non-ASCII digits and spaces, marks).
_CHILD = r"""
import hashlib, json, random, sys
sys.path.insert(0, sys.argv[1])
from bench.traffic import offline_files
from streams import core, offline
from streams.pii import HASHED_KEYS, hash_user_data
from streams.settings import Settings

pixel, server = offline_files(3000)
lines = offline.read_lines("browser", "p", b"\n".join(pixel))
lines += offline.read_lines("server", "s", b"\n".join(server))
out = offline.process(Settings(merge_window=5), offline.ordered(
    [x for x in lines if x.source == "browser"], [x for x in lines if x.source == "server"]
), now=1.0)
digest = hashlib.sha256(offline.dumps_lines(out.conversions + out.candidates
                                            + out.dead_letters)).hexdigest()
rng = random.Random(5)
alphabet = list("aZ09 .-+@#/()") + list("ΣσςΟΔßẞİıǅﬁÅÅ\u0301\u00a0\u2003\u0661\uff13")
hashed = []
for _ in range(3000):
    ud = {k: "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
          for k in rng.sample(sorted(HASHED_KEYS), 4)}
    r = hash_user_data(ud, default_phone_country=rng.choice([None, "US", "GB"]),
                       this_year=2026)
    hashed.append([r.user_data, r.warnings, r.hashed, r.prehashed, r.dropped])
print(json.dumps({"core": core.running(), "process": digest,
                  "pii": hashlib.sha256(json.dumps(hashed).encode()).hexdigest()}))
"""


def _run(which: str) -> dict[str, str]:
    env = {**os.environ, core.ENV: which}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, str] = json.loads(proc.stdout)
    return result


def test_compiled_and_pure_give_the_same_outputs() -> None:
    if core._built() is not None:
        if os.environ.get(core.ENV) == "compiled":
            pytest.fail(f"CONVSTREAM_CORE=compiled but {core._built()}")
        pytest.skip(f"no compiled core to compare: {core._built()}")
    compiled, pure = _run("compiled"), _run("pure")
    assert (compiled["core"], pure["core"]) == ("compiled", "pure")
    assert compiled["process"] == pure["process"]
    assert compiled["pii"] == pure["pii"]
