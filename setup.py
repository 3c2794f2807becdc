"""Build of the optional compiled core: the pure per-event modules of ``streams`` compiled
with mypyc (``streams/core.py`` lists them and chooses at import which one runs).

Everything else is in pyproject.toml. The compiled core is an optimisation only: the
``.py`` modules are always installed and stay the fallback. It is skipped, and the
install goes on with pure Python, when ``CONVSTREAM_CORE=pure`` is set at build time,
when mypyc is not importable, or when the C build fails (no compiler, no headers).
After a build whose extensions all compiled, ``streams/_core_build.json`` records the
SHA-256 of each compiled source, so a ``.py`` edited since (an editable install) runs as
pure Python until it is built again (``make compile``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "streams"))
import core  # noqa: E402  (streams/core.py, read as a plain module: no package import)

del sys.path[0]


def _sources() -> dict[str, str]:
    return {
        name: hashlib.sha256((HERE / "streams" / f"{name}.py").read_bytes()).hexdigest()
        for name in core.COMPILED
    }


class BuildCore(build_ext):
    """build_ext that never fails the install and stamps a complete build."""

    def run(self) -> None:
        stamps = {
            Path(self.build_lib) / "streams" / core.STAMP,
            HERE / "streams" / core.STAMP,
        }
        for stamp in stamps:  # no stamp while (or unless) a build is complete
            stamp.unlink(missing_ok=True)
        try:
            super().run()
        except Exception as e:  # a compiler error: pure Python it is
            print(f"convstream: compiled core not built ({e}); using pure Python", flush=True)
            return
        built = [Path(self.get_ext_fullpath(ext.name)) for ext in self.extensions]
        if not self.extensions or not all(p.exists() for p in built):
            print("convstream: compiled core incomplete; using pure Python", flush=True)
            return
        text = json.dumps({"sources": _sources()}, indent=1, sort_keys=True) + "\n"
        for stamp in {p.parent / core.STAMP for p in built if p.name.startswith("pii.")}:
            stamp.write_text(text)
        if self.inplace or getattr(self, "editable_mode", False):
            (HERE / "streams" / core.STAMP).write_text(text)


def _extensions() -> list[Any]:
    if os.environ.get(core.ENV, "").strip().lower() == "pure":
        print(f"convstream: {core.ENV}=pure: compiled core not built", flush=True)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("convstream: mypyc not available: compiled core not built", flush=True)
        return []
    paths = [f"streams/{name}.py" for name in core.COMPILED]
    old = os.getcwd()
    os.chdir(HERE)  # mypyc takes paths relative to the project
    try:
        exts = mypycify(
            [f"--config-file={HERE / 'streams' / 'mypyc.ini'}", *paths],
            opt_level="3",
            group_name="streams._core",
        )
    except BaseException as e:  # a type error mypyc rejects: pure Python it is
        print(f"convstream: mypyc failed ({e!r}); using pure Python", flush=True)
        return []
    finally:
        os.chdir(old)
    for ext in exts:
        ext.optional = True  # a failed C build skips the extension, not the install
    return list(exts)


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildCore})
