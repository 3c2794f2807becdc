"""Which implementation of the per-event core runs: compiled (mypyc) or pure Python.

The modules in ``COMPILED`` are plain Python; ``pip install`` also compiles them with
mypyc when it can (setup.py), and the compiled extension then sits next to each
``.py`` and is what ``import`` finds first. ``select`` (called once, by
``streams/__init__.py``, before any of them is imported) decides, from the environment
variable ``CONVSTREAM_CORE``:

- ``auto`` (default): compiled when a complete build is installed and every compiled
  source is unchanged since it was built (``_core_build.json`` holds their SHA-256);
  else pure Python (an editable checkout edited since its last build, no compiler at
  install time, ...).
- ``pure``: the ``.py`` files, whatever is installed.
- ``compiled``: compiled, or ``ImportError`` (CI: the compiled path must be tested).

Pure Python is chosen by a finder at the front of ``sys.meta_path`` that loads each
module of ``COMPILED`` from its ``.py`` file. The choice holds for the process.
This module imports nothing of ``streams`` (setup.py reads it too).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

ENV: Final = "CONVSTREAM_CORE"
STAMP: Final = "_core_build.json"
# streams.<name> for each: the pure per-event path (no Kafka, no Faust, no prometheus)
COMPILED: Final = (
    "align",
    "attribution",
    "capi",
    "codes",
    "dedupe",
    "groups",
    "model",
    "offline",
    "pii",
    "pipeline",
    "pixel",
    "quality",
    "query",
    "records",
    "validate",
)
_HERE: Final = Path(__file__).resolve().parent


class _PureFinder:
    """Finds ``streams.<name>`` for the names of ``COMPILED`` as their ``.py`` source."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != "streams" or name not in COMPILED:
            return None
        source = _HERE / f"{name}.py"
        loader = importlib.machinery.SourceFileLoader(fullname, str(source))
        return importlib.util.spec_from_file_location(fullname, source, loader=loader)


def _built(here: Path = _HERE) -> str | None:
    """None when a complete, current compiled build is installed in ``here`` (the
    package folder), else why not."""
    try:
        stamp = json.loads((here / STAMP).read_bytes())
    except (OSError, ValueError):
        return "no compiled build is installed"
    sources = stamp.get("sources") if isinstance(stamp, dict) else None
    if not isinstance(sources, dict) or set(sources) != set(COMPILED):
        return "the compiled build is of another set of modules"
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    for name in COMPILED:
        if not any((here / f"{name}{s}").exists() for s in suffixes):
            return f"streams/{name} is not compiled"
        digest = hashlib.sha256((here / f"{name}.py").read_bytes()).hexdigest()
        if sources[name] != digest:
            return f"streams/{name}.py changed since it was compiled (make compile)"
    return None


def select() -> str:
    """Choose the core for this process (idempotent): ``"compiled"`` or ``"pure"``."""
    if any(isinstance(f, _PureFinder) for f in sys.meta_path):
        return "pure"
    want = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if want not in ("auto", "pure", "compiled"):
        raise ImportError(f"{ENV} must be auto, pure or compiled, not {want!r}")
    why = None if want == "pure" else _built()
    if want == "compiled" and why is not None:
        raise ImportError(f"{ENV}=compiled, but {why}")
    if want == "pure" or why is not None:
        sys.meta_path.insert(0, _PureFinder())
        return "pure"
    return "compiled"


def running() -> str:
    """``"compiled"`` or ``"pure"``: what the imported core modules actually are."""
    from streams import pipeline  # a compiled module has no Python source as its file

    return "pure" if str(pipeline.__file__).endswith(".py") else "compiled"


def main(argv: Sequence[str]) -> int:
    """Say whether a current compiled build is installed and, if not, why; with
    ``--current``, exit 1 unless it is (the Makefile's ``compile`` target)."""
    why = _built()
    print(f"convstream core: {'compiled (mypyc)' if why is None else 'pure Python: ' + why}")
    return 1 if "--current" in argv and why is not None else 0
