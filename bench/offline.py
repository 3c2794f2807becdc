"""Full offline path of ``convstream process`` on one core: read the raw JSONL files,
order them by received_at, validate, hash PII, dedup, attribute (with an ads catalog),
and write the three output files -- the same ``cli.main(["process", ...])`` the command
runs, in this process (interpreter start-up and imports not counted).

    python bench/offline.py [N] [--rounds R]    (default ~100000 messages, best of 3)

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
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.traffic import catalog_lines, offline_files
from streams import cli


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


def main() -> None:
    argv = sys.argv[1:]
    rounds = 3
    if "--rounds" in argv:
        at = argv.index("--rounds")
        rounds = int(argv[at + 1])
        del argv[at : at + 2]
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
