"""No tracked file of the repository points outside it.

A user's clone holds the repository and nothing beside it: a link to a sibling folder, an
absolute path of a developer's machine or a document that is not shipped is a dead end.
The scan reads every text file ``git ls-files`` lists and names each offending
``file:line``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()

# Paths that exist only on the machine a file was written on. (Spelled so that this file
# does not match itself.)
OUTSIDE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a sibling 'shared' folder", re.compile(r"\.\./+share[d]\b")),
    ("the internal spec", re.compile(r"\bshared/+SPE[C]\b")),
    ("a /work/ path", re.compile(r"(?<![\w.~-])/wor[k]/")),
    ("a home directory", re.compile(r"(?<![\w.~-])(?:/home/|/Users/|~/wor[k]/)\w")),
    ("a file:// URL", re.compile(r"\bfil[e]://")),
    ("a Windows user folder", re.compile(r"\b[A-Za-z]:\\+User[s]\\")),
)
# Markdown links and images: [text](target) (the target without a title).
_MD_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Directories never worth scanning when there is no git (a source tree without .git).
_UNTRACKED_DIRS = frozenset(
    {".git", ".venv", ".cache", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
)


def tracked_files(root: Path = ROOT) -> list[str]:
    """Repository-relative paths of the tracked files (a walk when git is not there)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z"],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        files: list[str] = []
        for here, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in _UNTRACKED_DIRS and not d.endswith(".egg-info")]
            files.extend(Path(here, n).relative_to(root).as_posix() for n in names)
        return sorted(files)
    return sorted(p for p in out.decode("utf-8").split("\0") if p)


def read_text(path: Path) -> str | None:
    """The file's text, or None for a binary file (NUL bytes or not UTF-8)."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def outside_references(rel: str, text: str, root: Path = ROOT) -> list[str]:
    """``file:line: why: excerpt`` for each reference of ``text`` (the file ``rel``) that
    points outside ``root``: a known outside path, or a relative Markdown link whose
    target resolves outside the repository."""
    found = []
    markdown = rel.lower().endswith((".md", ".markdown"))
    base = (root / rel).parent
    for n, line in enumerate(text.splitlines(), start=1):
        for why, pattern in OUTSIDE_PATTERNS:
            m = pattern.search(line)
            if m:
                found.append(f"{rel}:{n}: {why}: {line.strip()[:160]}")
        if not markdown:
            continue
        for m in _MD_LINK.finditer(line):
            target = m.group(1).split("#", 1)[0]
            if not target or _URL_SCHEME.match(target):
                continue
            where = (root / target.lstrip("/")) if target.startswith("/") else base / target
            resolved = Path(os.path.normpath(where))
            if not resolved.is_relative_to(root):
                found.append(f"{rel}:{n}: a link outside the repository: {m.group(0)}")
    return found


def test_no_tracked_file_refers_outside_the_repository() -> None:
    files = tracked_files()
    assert "README.md" in files, files[:5]
    problems = []
    scanned = 0
    for rel in files:
        if rel == THIS:
            continue  # the patterns above, explained
        path = ROOT / rel
        if not path.is_file():
            continue  # deleted in the work tree, not yet committed
        text = read_text(path)
        if text is None:
            continue
        scanned += 1
        problems.extend(outside_references(rel, text))
    assert scanned > 50, f"only {scanned} text files scanned: is {ROOT} the repository?"
    assert not problems, "references outside the repository:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "line",
    [
        "The contract is [`SPEC`](" + "../" + "shared/SPEC.md).",
        "see " + "shared" + "/SPEC.md section 6",
        "cd /" + "work/main && make",
        "log at /" + "home/alice/convstream.log",
        "open fil" + "e:///etc/passwd",
        "[docs](../../elsewhere/README.md)",
        "[abs](/../outside.md)",
    ],
)
def test_the_scan_catches_an_outside_reference(line: str) -> None:
    found = outside_references("docs/example.md", f"intro\n{line}\n")
    assert found and all(f.startswith("docs/example.md:2: ") for f in found), found


@pytest.mark.parametrize(
    "line",
    [
        "[the topics](topics.md#dead-letters) and [README](../README.md)",
        "[Meta](https://developers.facebook.com/docs/marketing-api/conversions-api)",
        'data_dir=f"/tmp/convstream-bench-{run}"',
        'repo="$(cd "$here/../.." && pwd)"',
        "a framework (works/ in a path is fine): src/work/x",
    ],
)
def test_the_scan_lets_inside_references_pass(line: str) -> None:
    assert outside_references("docs/example.md", line) == []
