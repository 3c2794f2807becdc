"""The ``convstream`` command: worker, collect, produce, demo, process, specs, forward.

Settings come from the environment (streams.settings); flags override them. Bad flags
or settings exit with status 2 and a message naming the field.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from streams import settings as settings_mod
from streams.settings import KafkaSetupError, Settings, SettingsError
from streams.tally import Tally

EXAMPLES = Path(__file__).resolve().parent.parent / "schemas" / "examples"


def _settings(args: argparse.Namespace) -> Settings:
    s = settings_mod.from_env()
    over: dict[str, Any] = {}
    if getattr(args, "web_port", None):
        over["web_port"] = args.web_port
    if getattr(args, "collect_port", None):
        over["collect_port"] = args.collect_port
    return s.with_overrides(**over) if over else s


def cmd_worker(args: argparse.Namespace) -> int:
    s = _settings(args)
    if args.loop == "uvloop":
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
            pass
    from faust import Worker

    from streams.app import create_app
    from streams.logs import logging_config
    from streams.runtime import tune_gc, tune_malloc

    tune_malloc()
    wiring = create_app(s)
    # the internal topics exist, and the broker's metadata shows them, before any
    # consumer joins its group (else their partitions stay unassigned for minutes);
    # credentials and ACLs are checked first: a refusal is one line and exit 1, where
    # Faust would retry (or stall) with tracebacks
    from agents import kafka_io

    async def preflight() -> None:
        t = s.topics
        await kafka_io.check_access(
            s,
            reads=(t.pixel_raw, t.server_raw, t.catalog),
            writes=(t.conversions, t.candidates, t.dead_letter),
            groups=worker_groups(s),
        )
        await kafka_io.ensure_topics(s, wiring.internal_topics())

    asyncio.run(preflight())  # KafkaSetupError: main() prints it, exit 1
    tune_gc()
    worker = Worker(
        wiring.app,
        loglevel=s.log_level,
        logging_config=logging_config(s.log_level),
        quiet=True,
        redirect_stdouts=False,
    )
    worker.execute_from_commandline()
    return 0


def worker_groups(s: Settings) -> tuple[str, ...]:
    """The consumer groups `convstream worker` joins (each needs a Read ACL)."""
    return (s.app_id, f"{s.app_id}-ingest")


def cmd_collect(args: argparse.Namespace) -> int:
    """The HTTP collector (SPEC §12): /tr and /{pixel_id}/events to the raw topics."""
    import logging.config

    s = _settings(args)
    over: dict[str, Any] = {}
    if args.host:
        over["collect_host"] = args.host
    if args.port:
        over["collect_port"] = args.port
    s = s.with_overrides(**over) if over else s
    if args.loop == "uvloop":
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
            pass
    from agents.collect import run
    from streams.logs import logging_config

    logging.config.dictConfig(logging_config(s.log_level))
    run(s)
    return 0


def _topic_specs(s: Settings, names: Iterable[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """(partitions, configs) of topics the CLI creates: the catalog is compacted.

    They are created with ``ensure_topics``, which waits until the broker's metadata shows
    them: a producer that asks for a topic too early gets aiokafka's error log "Topic ...
    not found in cluster metadata" (and retries), which a newcomer should not see."""
    return {
        n: (s.partitions, {"cleanup.policy": "compact"} if n == s.topics.catalog else {})
        for n in names
    }


def cmd_produce(args: argparse.Namespace) -> int:
    from agents.kafka_io import ensure_topics, produce

    s = _settings(args)
    try:
        lines = [ln for ln in Path(args.file).read_bytes().splitlines() if ln.strip()]
    except OSError as e:
        raise SettingsError(f"cannot read {args.file}: {e.strerror}") from None

    async def run() -> int:
        await ensure_topics(s, _topic_specs(s, [args.topic]))
        return await produce(s, args.topic, lines)

    n = asyncio.run(run())
    print(f"produced {n} messages from {args.file} to {args.topic}")
    return 0


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def metric_sum(text: str, name: str) -> float:
    """Sum of all samples of one metric in Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in "{ "):
            total += float(line.rsplit(" ", 1)[1])
    return total


DEMO_PIXEL = "1234567890"
DEMO_TOKEN = "demo-token"


def send_requests(base_url: str, reqs: list[Any], timeout: float = 15.0) -> list[int]:
    """Send replay.Request objects one after the other (so the topic order is theirs);
    the HTTP status of each (0: no answer)."""
    statuses = []
    for r in reqs:
        req = urllib.request.Request(
            base_url + r.path, data=r.body or None, headers=r.headers, method=r.method
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                resp.read()
                statuses.append(resp.status)
        except urllib.error.HTTPError as e:
            e.read()
            statuses.append(e.code)
        except OSError:
            statuses.append(0)
    return statuses


def cmd_demo(args: argparse.Namespace) -> int:
    from agents.kafka_io import end_offsets, ensure_topics, produce, read

    s = _settings(args)
    t = s.topics
    url = f"http://{s.web_host}:{s.web_port}"
    pixel = [ln for ln in (EXAMPLES / "pixel_hits.jsonl").read_bytes().splitlines() if ln.strip()]
    server = [
        ln for ln in (EXAMPLES / "server_events.jsonl").read_bytes().splitlines() if ln.strip()
    ]
    outs = (t.conversions, t.candidates, t.dead_letter)
    print(f"broker {s.bootstrap_servers}; creating topics, writing the ads catalog")

    ads = [ln for ln in (EXAMPLES / "ads_catalog.jsonl").read_bytes().splitlines() if ln.strip()]

    async def setup() -> dict[str, dict[int, int]]:
        await ensure_topics(s, _topic_specs(s, [t.pixel_raw, t.server_raw, t.catalog, *outs]))
        # the catalog (compacted, keyed by ad id) is loaded before the worker is ready
        await produce(s, t.catalog, ads, [json.loads(a)["ad_id"].encode() for a in ads])
        return {o: await end_offsets(s, o) for o in outs}

    start = asyncio.run(setup())
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=s.bootstrap_servers)
    env.setdefault("CONVSTREAM_DATA_DIR", str(Path(".cache/demo-data").resolve()))
    log_path = Path(args.log)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"starting worker (log: {log_path})")
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--web-port", str(s.web_port)],
            env=env,
            stdout=log,
            stderr=log,
        )
    # the collector: the demo token for the sample pixel; the demo is its own trusted
    # proxy, so the samples' client addresses ride in X-Forwarded-For
    collect_url = f"http://{s.collect_host}:{s.collect_port}"
    collect_env = dict(
        env,
        CONVSTREAM_COLLECT_TOKENS=f"{DEMO_PIXEL}={DEMO_TOKEN}",
        CONVSTREAM_COLLECT_TRUSTED_PROXIES="127.0.0.1,::1",
    )
    print(f"starting collector on {collect_url}")
    with log_path.open("ab") as log:
        collector = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "collect", "--port", str(s.collect_port)],
            env=collect_env,
            stdout=log,
            stderr=log,
        )
    try:
        t0 = time.time()
        while _get(f"{url}/readyz")[0] != 200 or _get(f"{collect_url}/readyz")[0] != 200:
            if proc.poll() is not None or collector.poll() is not None or time.time() - t0 > 90:
                print(f"worker or collector did not become ready; see {log_path}", file=sys.stderr)
                return 1
            time.sleep(0.3)
        print(f"worker and collector ready after {time.time() - t0:.1f}s; sending sample traffic")

        from streams import replay

        reqs = replay.requests_for(pixel, server, now=time.time(), token=DEMO_TOKEN)
        statuses = send_requests(collect_url, reqs)
        for source, what in (("browser", "pixel hits (GET /tr)"), ("server", "CAPI bodies (POST)")):
            codes = [st for r, st in zip(reqs, statuses, strict=True) if r.source == source]
            counts = ", ".join(f"{n} x {c}" for c, n in sorted(Counter(codes).items()))
            print(f"  {len(codes)} {what} -> {collect_url}: HTTP {counts}")
        print("  (a 400 is the sample's line that is not JSON: refused at the door, where")
        print("   `convstream produce` would have it dead-lettered as malformed_message)")
        sent = sum(1 for st in statuses if 200 <= st < 300)
        t0 = time.time()
        while time.time() - t0 < 60:
            _, body = _get(f"{url}/metrics")
            if metric_sum(body.decode(), "convstream_messages_in_total") >= sent:
                break
            time.sleep(0.5)

        async def collect() -> dict[str, list[Any]]:
            return {
                o: await read(s, o, start=start[o], idle_timeout=2.0, max_wait=20) for o in outs
            }

        got = asyncio.run(collect())
        print("\n== output, by topic ==")
        for o in outs:
            print(f"  {o:<40} {len(got[o])} records")
        for o in outs:
            for _, value, *_ in got[o][: args.show]:
                print(f"\n-- {o}")
                print(json.dumps(json.loads(value or b"null"), indent=2, ensure_ascii=False))
        _, body = _get(f"{url}/metrics")
        print(f"\n== metrics ({url}/metrics), convstream_* samples ==")
        for line in body.decode().splitlines():
            if line.startswith("convstream_") and not line.startswith("convstream_batch_"):
                print("  " + line)
        _, body = _get(f"{collect_url}/metrics")
        print(f"\n== collector metrics ({collect_url}/metrics) ==")
        for line in body.decode().splitlines():
            if line.startswith(
                (
                    "convstream_collect_requests",
                    "convstream_collect_messages",
                    "convstream_collect_rejected",
                    "convstream_collect_events",
                )
            ):
                print("  " + line)
        if args.keep_running:
            print(f"\nworker keeps running (pid {proc.pid}); metrics at {url}/metrics")
            print(f"collector keeps running (pid {collector.pid}) on {collect_url}")
            return 0
    finally:
        if not args.keep_running:
            for p in (collector, proc):
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            print("\nworker and collector stopped")
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from streams import offline

    s = _settings(args)
    if args.merge_window is not None:
        if args.merge_window < 0:
            raise SettingsError("--merge-window must be >= 0 seconds")
        s = s.with_overrides(merge_window=args.merge_window)
    if args.pixel is None and args.server is None:
        raise SettingsError("give --pixel FILE, --server FILE, or both")

    def load(path: str | None, source: str, topic: str) -> list[offline.Line]:
        if path is None:
            return []
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise SettingsError(f"cannot read --{source} file {path}: {e.strerror}") from None
        return offline.read_lines("browser" if source == "pixel" else "server", topic, data)

    from streams.runtime import batch_without_cyclic_gc, tune_gc

    tune_gc()
    with batch_without_cyclic_gc():  # every record is kept until written
        t0 = time.perf_counter()
        pixel = load(args.pixel, "pixel", s.topics.pixel_raw)
        server = load(args.server, "server", s.topics.server_raw)
        now = time.time()
        tally = Tally()
        catalog, rejected = None, list[dict[str, Any]]()
        if args.catalog is not None:
            try:
                data = Path(args.catalog).read_bytes()
            except OSError as e:
                msg = f"cannot read --catalog file {args.catalog}: {e.strerror}"
                raise SettingsError(msg) from None
            catalog, rejected = offline.load_catalog(s.topics.catalog, data, now, tally)
        result = offline.run(s, pixel, server, now=now, catalog=catalog)
        result.dead_letters[:0] = rejected  # the catalog is read first, as the worker does
        result.tally.update(tally)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "conversions.jsonl").write_bytes(offline.dumps_lines(result.conversions))
        (out / "attribution_candidates.jsonl").write_bytes(offline.dumps_lines(result.candidates))
        (out / "dead_letters.jsonl").write_bytes(offline.dumps_lines(result.dead_letters))
        elapsed = time.perf_counter() - t0
        text = summary(result, len(pixel), len(server), out, elapsed)
        del result, pixel, server  # freed before the collector is back: nothing to scan
    print(text)
    return 0


def summary(result: Any, n_pixel: int, n_server: int, out: Path, elapsed: float) -> str:
    t = result.tally
    lines = [
        f"read      {n_pixel} pixel hits, {n_server} server messages "
        f"({t.sum_of('events_in')} events) in {elapsed:.2f}s",
        f"wrote     {len(result.conversions)} conversions  -> {out / 'conversions.jsonl'}",
        f"          {len(result.candidates)} attribution candidates "
        f"-> {out / 'attribution_candidates.jsonl'}",
        f"          {len(result.dead_letters)} dead letters -> {out / 'dead_letters.jsonl'}",
        f"skipped   {t.sum_of('non_conversions')} non-conversion hits (Microdata, automatic)",
        f"dedup     {t.sum_of('valid_events')} valid events -> {len(result.conversions)} "
        f"conversions, {t.sum_of('duplicates')} duplicates "
        f"({t.sum_of('merges')} merged into held conversions)",
        f"clicks    {t['click_evidence', 'with']} conversions with click evidence, "
        f"{t['click_evidence', 'without']} without; {t.sum_of('landing_stored')} landing "
        f"hits stored; {t['spec_lookups', 'known']} candidates with a known ad",
    ]
    groups = (
        ("dead letters by code", "dead_letters", -1),
        ("errors", "errors", -1),
        ("warnings", "warnings", -1),
        ("conversions by event", "conversions_out", -1),
        ("duplicates by rule", "duplicates", 1),
        ("candidates by window", "candidates", 1),
        ("no candidate", "candidates_out_of_window", 1),
        ("spec matches", "spec_matches", 1),
    )
    for title, name, idx in groups:
        counts: dict[str, int] = {}
        for key, n in t.items():
            if key[0] == name:
                counts[key[idx]] = counts.get(key[idx], 0) + n
        if counts:
            body = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            lines.append(f"{title + ':':<22}{body}")
    return "\n".join(lines)


def _json_file(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_bytes())
    except OSError as e:
        raise SettingsError(f"cannot read {what} file {path}: {e.strerror}") from None
    except ValueError as e:
        raise SettingsError(f"{what} file {path} is not JSON: {e}") from None


def cmd_specs(args: argparse.Namespace) -> int:
    """``specs resolve AD.json`` / ``specs match AD.json EVENT.json`` (SPEC §9)."""
    from streams import specs

    def invalid(path: str, e: specs.SpecError) -> int:
        print(f"convstream: {path}: invalid at {e}", file=sys.stderr)
        return 2

    try:
        ad = specs.resolve_ad(_json_file(args.ad, "ad"))
    except specs.SpecError as e:
        return invalid(args.ad, e)
    if args.specs_cmd == "resolve":
        print(json.dumps(ad.as_dict(), indent=2))
        return 0
    event = _json_file(args.event, "event")
    try:
        report = specs.explain(ad, event)
        lines = specs.explain_lines(ad, event)
    except specs.SpecError as e:
        return invalid(args.event, e)
    print(json.dumps(report, indent=2) if args.json else "\n".join(lines))
    return 0


def cmd_forward(args: argparse.Namespace) -> int:
    """``forward`` (SPEC §11): conversions topic → Graph API; or a file (``--input``)."""
    import logging.config

    from streams.logs import logging_config

    s = _settings(args)
    logging.config.dictConfig(logging_config(s.log_level))
    if args.dry_run is not None and args.input is None:
        raise SettingsError("--dry-run needs --input FILE (it writes that file's request bodies)")
    if args.dead_letters is not None and args.input is None:
        raise SettingsError("--dead-letters needs --input FILE (the stream writes to a topic)")
    from agents import forward as fwd_agent
    from agents import forward_file
    from agents.graph_client import TokenRejected
    from streams.runtime import tune_gc

    tune_gc()
    if args.input is None:
        if not s.forward.access_tokens:
            raise SettingsError(
                "no access token: set CONVSTREAM_META_ACCESS_TOKENS or "
                "CONVSTREAM_META_ACCESS_TOKENS_FILE"
            )
        return asyncio.run(fwd_agent.run_stream(s))
    src = Path(args.input)
    try:
        data = src.read_bytes()
    except OSError as e:
        raise SettingsError(f"cannot read --input file {src}: {e.strerror}") from None
    things = forward_file.read_file(data)
    t0 = time.perf_counter()
    if args.dry_run is not None:
        r = forward_file.dry_run(things, s.forward, Path(args.dry_run))
        print(
            f"dry run: {r.events} records -> {r.bodies} request bodies in {args.dry_run} "
            f"({r.rejected} records are not conversions and would be dead-lettered)"
        )
        return 0
    dead = (
        Path(args.dead_letters)
        if args.dead_letters
        else src.with_name("forward_dead_letters.jsonl")
    )
    try:
        r = asyncio.run(forward_file.send_file(things, s, dead, str(src)))
    except TokenRejected as e:
        print(f"convstream: {e}", file=sys.stderr)
        return 1
    print(
        f"forward: {r.events} records, {r.sent} accepted, {r.rejected} dead-lettered "
        f"-> {dead}, {r.requests} requests in {time.perf_counter() - t0:.2f}s"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convstream", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="run the stream worker (settings from the environment)")
    w.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    w.add_argument("--web-port", type=int)
    w.set_defaults(func=cmd_worker)
    co = sub.add_parser("collect", help="HTTP collector: Meta Pixel /tr and CAPI /{pixel}/events")
    co.add_argument("--host", help="bind address (default CONVSTREAM_COLLECT_HOST)")
    co.add_argument("--port", type=int, help="port (default CONVSTREAM_COLLECT_PORT)")
    co.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    co.set_defaults(func=cmd_collect)
    pr = sub.add_parser("produce", help="send a JSONL file, one message value per line, to a topic")
    pr.add_argument("--topic", required=True)
    pr.add_argument("file")
    pr.set_defaults(func=cmd_produce)
    pc = sub.add_parser("process", help="run the pipeline offline over raw JSONL files")
    pc.add_argument("--pixel", metavar="FILE", help="JSONL of events.pixel.raw values")
    pc.add_argument("--server", metavar="FILE", help="JSONL of events.server.raw values")
    pc.add_argument("--catalog", metavar="FILE", help="JSONL of ads.catalog values")
    pc.add_argument("--out", metavar="DIR", required=True)
    pc.add_argument("--merge-window", type=int, metavar="S")
    pc.set_defaults(func=cmd_process)
    sp = sub.add_parser("specs", help="resolve an ad's tracking/conversion specs, or match one")
    ssub = sp.add_subparsers(dest="specs_cmd", required=True)
    r = ssub.add_parser("resolve", help="print the resolved tracking specs and conversion spec")
    r.add_argument("ad", metavar="AD.json")
    r.set_defaults(func=cmd_specs)
    m = ssub.add_parser("match", help="which of an ad's specs match an event, and why not")
    m.add_argument("ad", metavar="AD.json")
    m.add_argument("event", metavar="EVENT.json", help="a conversion record, event or action(s)")
    m.add_argument("--json", action="store_true", help="the report as JSON")
    m.set_defaults(func=cmd_specs)
    fw = sub.add_parser(
        "forward", help="send conversions to the Conversions API (the topic, or --input FILE)"
    )
    fw.add_argument("--input", metavar="FILE", help="JSONL of conversions.enriched values")
    fw.add_argument(
        "--dead-letters",
        metavar="FILE",
        help="with --input: rejected events (default forward_dead_letters.jsonl beside it)",
    )
    fw.add_argument("--dry-run", metavar="DIR", help="with --input: write bodies, send nothing")
    fw.add_argument("--web-port", type=int)
    fw.set_defaults(func=cmd_forward)
    d = sub.add_parser("demo", help="worker + sample traffic on a running broker; print output")
    d.add_argument("--keep-running", action="store_true", help="leave the worker running")
    d.add_argument("--show", type=int, default=2, help="records to print per output topic")
    d.add_argument("--log", default=".cache/demo-worker.log")
    d.add_argument("--web-port", type=int)
    d.add_argument("--collect-port", type=int, help="the collector's port (default 8080)")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SettingsError as e:
        print(f"convstream: {e}", file=sys.stderr)
        return 2
    except KafkaSetupError as e:  # credentials, TLS, ACLs: one line, no secret
        print(f"convstream {args.cmd}: {e}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
