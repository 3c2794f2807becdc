"""Full offline path of ``convstream process`` on one core: read the raw JSONL files,
order them by received_at, validate, hash PII, dedup, attribute (with an ads catalog),
and write the three output files -- the same ``cli.main(["process", ...])`` the command
runs, in this process (interpreter start-up and imports not counted).

    python bench/offline.py [N] [--rounds R] [--compare]
        (default ~100000 messages, best of 3 rounds)

The core is the one this process imports (``CONVSTREAM_CORE``: compiled when built,
else pure; printed first). ``--compare`` runs the compiled and the pure core in child
processes instead, alternating, R rounds each, and prints both and their ratio.

Traffic: ``bench.traffic.offline_files`` (browser/server pairs, id-less server copies,
retries, landing hits with fbclid, Microdata, multi-event bodies, invalid events,
malformed lines). Baseline, timed in the same run over the same files: read the lines,
orjson-decode and re-encode every message, write them out -- the floor any JSON-in,
JSON-out processor pays. Rounds alternate between the two; figures are per CPU second
(best round), which a busy shared machine disturbs less than wall time. The last line is
the ratio of the two. Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.traffic import catalog_lines, offline_files
from streams import cli, core


def baseline(pixel: Path, server: Path, out: Path) -> None:
    for src, name in ((pixel, "p.jsonl"), (server, "s.jsonl")):
        lines = [ln for ln in src.read_bytes().split(b"\n") if ln.strip()]
        decoded = []
        for ln in lines:
            try:
                decoded.append(orjson.loads(ln))
            except orjson.JSONDecodeError:
                decoded.append(None)
        (out / name).write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in decoded))


class Timing:
    """Best wall and CPU seconds over the rounds of one contender."""

    def __init__(self) -> None:
        self.wall = self.cpu = float("inf")

    def run(self, fn: Callable[[], None]) -> None:
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        self.wall = min(self.wall, time.perf_counter() - w0)
        self.cpu = min(self.cpu, time.process_time() - c0)


def compare(n: int, rounds: int) -> None:
    """Compiled and pure core in alternating child processes (one round each time)."""
    best: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for which in ("compiled", "pure"):
            env = {**os.environ, core.ENV: which}
            cmd = [sys.executable, __file__, str(n), "--rounds", "1", "--json"]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            got = json.loads(out.stdout.splitlines()[-1])
            b = best.setdefault(which, {"cpu": float("inf"), "wall": float("inf")})
            b["cpu"], b["wall"] = min(b["cpu"], got["cpu"]), min(b["wall"], got["wall"])
            b["base_cpu"] = min(b.get("base_cpu", float("inf")), got["base_cpu"])
            b["messages"] = got["messages"]
    for which, b in best.items():
        m = b["messages"]
        print(
            f"{which:8s} core: {m / b['cpu']:,.0f} messages per CPU second, "
            f"{m / b['wall']:,.0f} per wall second ({b['cpu']:.2f} s CPU, {b['wall']:.2f} s "
            f"wall; baseline {m / b['base_cpu']:,.0f}/CPU s, ratio {b['base_cpu'] / b['cpu']:.3f})"
        )
    print(f"ratio compiled / pure (CPU): {best['pure']['cpu'] / best['compiled']['cpu']:.2f}")


def main() -> None:
    argv = sys.argv[1:]
    rounds = 3
    if "--rounds" in argv:
        at = argv.index("--rounds")
        rounds = int(argv[at + 1])
        del argv[at : at + 2]
    as_json = "--json" in argv
    if as_json:
        argv.remove("--json")
    if "--compare" in argv:
        argv.remove("--compare")
        compare(int(argv[0]) if argv else 100_000, rounds)
        return
    n = int(argv[0]) if argv else 100_000
    pixel_lines, server_lines = offline_files(n)
    with tempfile.TemporaryDirectory(prefix="convstream-bench-") as tmp:
        d = Path(tmp)
        pixel, server, catalog = d / "pixel.jsonl", d / "server.jsonl", d / "catalog.jsonl"
        pixel.write_bytes(b"\n".join(pixel_lines) + b"\n")
        server.write_bytes(b"\n".join(server_lines) + b"\n")
        catalog.write_bytes(b"\n".join(catalog_lines()) + b"\n")
        (d / "base").mkdir()
        argv = ["process", "--pixel", str(pixel), "--server", str(server)]
        argv += ["--catalog", str(catalog), "--out", str(d / "out")]
        summary = io.StringIO()

        def process() -> None:
            summary.seek(0)
            summary.truncate()
            with contextlib.redirect_stdout(summary):
                code = cli.main(argv)
            if code != 0:
                raise SystemExit(f"convstream process exited {code}")

        messages = len(pixel_lines) + len(server_lines)
        ours, base = Timing(), Timing()
        for _ in range(rounds):  # interleaved, so a noisy neighbour hits both alike
            ours.run(process)
            base.run(lambda: baseline(pixel, server, d / "base"))
        outs = {f.name: f.read_bytes().count(b"\n") for f in sorted((d / "out").iterdir())}
    if as_json:
        timing = {"messages": messages, "cpu": ours.cpu, "wall": ours.wall}
        print(json.dumps({**timing, "base_cpu": base.cpu, "core": core.running()}))
        return
    print(f"core: {core.running()} ({core.ENV}={os.environ.get(core.ENV, 'auto')})")
    print(
        f"{messages} messages ({len(pixel_lines)} pixel hits, {len(server_lines)} server "
        f"bodies), best of {rounds}"
    )
    print("\n".join("  " + ln for ln in summary.getvalue().splitlines()[:8]))
    print("  outputs: " + ", ".join(f"{k} {v}" for k, v in outs.items()))
    print(
        f"convstream process (full offline path): {messages / ours.cpu:,.0f} messages per "
        f"CPU second ({ours.cpu:.2f} s CPU, {ours.wall:.2f} s wall)"
    )
    print(
        f"baseline (orjson decode + re-encode, files read and written): "
        f"{messages / base.cpu:,.0f} messages per CPU second ({base.cpu:.2f} s CPU)"
    )
    print(f"ratio process / baseline (CPU): {base.cpu / ours.cpu:.3f}")


if __name__ == "__main__":
    main()
