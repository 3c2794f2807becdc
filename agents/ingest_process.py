"""Ingest in a child process of the worker: a second core for the stateless stage.

One Python process runs on one core at a time, and bench/e2e.py showed the worker
CPU-bound on one core (ingest ~45% of it, the stateful stages the rest) while the
second core of the machine was mostly idle. Ingest shares no state with the stages (it
has its own consumer group, ``<app_id>-ingest``, and writes to their input topic), so
``convstream worker`` can run it in a child process: ``CONVSTREAM_INGEST_PROCESS``
``auto`` (the default: when the worker may use 2 or more CPUs), ``yes`` or ``no``.

The worker (parent) side is :class:`IngestProcess`, a mode Service of the Faust app:

- it starts the worker's producer (the stages write with it) and then the child,
  ``python -m agents.ingest_process <fd> <uvloop|asyncio>``, with one end of a socket
  pair; the settings go down the socket (pickled: they hold credentials, so never on a
  command line or in the environment of a process listing);
- the child sends its metrics up the same socket, a frame per batch: the batch's
  counts (the pipeline's tally) and its size and duration, which the worker adds to its
  own registry, so ``/metrics`` shows ingest as before; and one ``joined`` frame (for
  ``/readyz``);
- if the child exits while the worker is not stopping (a failed stage exits with code
  70, agents/failfast.py), the worker exits too, with nothing of its own acked: the
  supervisor restarts both;
- stopping the worker stops the child with SIGTERM (it finishes its batch, commits, and
  exits), SIGKILL after ``STOP_TIMEOUT``.

The child dies with the worker: on Linux it asks the kernel for SIGKILL when its
parent exits (``PR_SET_PDEATHSIG``), and anywhere it stops when its end of the socket
reads end-of-file. A SIGKILLed worker leaves no ingest consumer behind.

Delivery is the in-process ingest's (agents/ingest.py): outputs acknowledged before
offsets are committed, so either process dying repeats outputs, never loses them.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import logging.config
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

from mode import Service

from agents.batchloop import observe_batch
from agents.failfast import EXIT_CODE, die
from agents.ingest import IngestLoop, IngestState, make_producer
from streams.settings import Settings
from streams.tally import Tally

log = logging.getLogger("convstream.ingest")

STOP_TIMEOUT = 30.0  # seconds the child has to finish its batch after SIGTERM
_LEN = struct.Struct("!I")
_PR_SET_PDEATHSIG = 1


def frame(obj: object) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next object from ``reader``; ``None`` at end-of-file."""
    try:
        head = await reader.readexactly(_LEN.size)
        return pickle.loads(await reader.readexactly(_LEN.unpack(head)[0]))
    except asyncio.IncompleteReadError:
        return None


def apply_report(report: tuple[Any, ...], state: Any) -> None:
    """Add one of the child's frames to this process: counts, a batch, or joined."""
    kind = report[0]
    if kind == "tally":
        Tally(dict(report[1])).flush()
    elif kind == "batch":
        observe_batch(IngestLoop.stage, report[1], report[2])
    elif kind == "joined":
        state.joined = True


class IngestProcess(Service):  # type: ignore[misc]
    """The worker's side: its producer, the child, and the child's reports."""

    def __init__(self, settings: Settings, state: IngestState, **kw: Any) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.ingest_state = state
        self.joined = False  # the child's consumer joined its group
        self.stopping = False
        self.proc: asyncio.subprocess.Process | None = None

    async def on_start(self) -> None:
        producer = make_producer(self.settings)
        await producer.start()
        self.ingest_state.producer = producer
        self.ingest_state.producer_ready.set()
        ours, theirs = socket.socketpair()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agents.ingest_process",
            str(theirs.fileno()),
            _loop_name(),
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        self.reader, self.writer = await asyncio.open_unix_connection(sock=ours)
        self.writer.write(frame((os.getpid(), self.settings)))
        await self.writer.drain()

    @Service.task
    async def _reports(self) -> None:
        while True:
            report = await read_frame(self.reader)
            if report is None:
                break
            apply_report(report, self)
        assert self.proc is not None
        code = await self.proc.wait()
        if not self.stopping:
            die("ingest", RuntimeError(f"the ingest process exited with code {code}"))

    async def on_stop(self) -> None:
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("the ingest process did not stop in time; killing it")
                proc.kill()
                await proc.wait()
        if self.ingest_state.producer is not None:
            await self.ingest_state.producer.stop()


class ChildIngest(IngestLoop):
    """The child's loop: metrics go up the socket instead of to a registry."""

    def __init__(self, settings: Settings, writer: asyncio.StreamWriter, **kw: Any) -> None:
        super().__init__(settings, None, **kw)
        self.writer = writer

    def on_joined(self) -> None:
        self.writer.write(frame(("joined",)))

    def count(self, tally: Tally) -> None:
        if tally:
            self.writer.write(frame(("tally", list(tally.items()))))
            tally.clear()

    def observe(self, seconds: float, n: int) -> None:
        self.writer.write(frame(("batch", seconds, n)))


def _loop_name() -> str:
    """The worker's event loop (``--loop``), for the child to run the same."""
    policy = type(asyncio.get_event_loop_policy())
    return "uvloop" if policy.__module__.startswith("uvloop") else "asyncio"


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent exits (Linux); exit now if it already did."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: end-of-file on the socket stops us
        pass
    if os.getppid() != parent:
        os._exit(EXIT_CODE)


async def _child(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    hello = await read_frame(reader)
    if hello is None:
        return
    parent, settings = hello
    die_with_parent(parent)

    from streams.logs import logging_config
    from streams.runtime import TRIM_INTERVAL, trim_malloc, tune_gc, tune_malloc

    logging.config.dictConfig(logging_config(settings.log_level))
    tune_malloc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ingest = ChildIngest(settings, writer)
    tune_gc()
    await ingest.start()
    trimming = asyncio.ensure_future(_trim_every(TRIM_INTERVAL, trim_malloc))
    try:  # a failed batch exits the process (agents/failfast.py)
        eof = asyncio.ensure_future(reader.read())  # the worker closed its end: it is gone
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({eof, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        trimming.cancel()
        await ingest.stop()
        try:
            await writer.drain()
        except (ConnectionError, OSError):
            pass


async def _trim_every(seconds: float, trim: Callable[[], bool]) -> None:
    """The heap's free pages back to the system every ``seconds`` (streams/runtime.py)."""
    while True:
        await asyncio.sleep(seconds)
        trim()


def main(argv: list[str]) -> int:
    """``python -m agents.ingest_process <fd> <uvloop|asyncio>`` (started by the worker)."""
    sock = socket.socket(fileno=int(argv[0]))
    if argv[1:] == ["uvloop"]:
        import uvloop

        uvloop.install()
    asyncio.run(_child(sock))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
