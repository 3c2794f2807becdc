"""Process-level tuning shared by the worker, ``convstream process`` and the benchmarks.

The pipeline allocates many short-lived objects per event, and CPython's cyclic GC
(gen-0 threshold 700) then keeps rescanning the long-lived heap: phonenumbers and
pycountry data, Faust's app graph. Freezing the heap that exists after start-up and
raising the gen-0 threshold: pure pipeline in batches of 1000, 21.9k -> 23.4k events/s on
one core (bench/pipeline.py vs --default-gc); when results pile up (a whole file in
``convstream process``), 14k -> 23k. Reference counting still frees almost everything
at once; the collector only has to find cycles, which the pipeline does not make.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any, Final

# young collections every 400,000 net allocations of tracked objects: a stage's batch
# holds tens of thousands of decoded containers alive, and at 50,000 each collection
# walked them (0.75 s of the worker's main process per 100k-message bench run, ~8% of
# it); the worker makes no cyclic garbage to wait for (gc.DEBUG_SAVEALL found none)
GEN0_THRESHOLD: Final = 400_000
# glibc serves allocations from this size up with their own mmap, returned on free
MMAP_THRESHOLD: Final = 4 * 1024 * 1024
# free memory glibc may keep at the top of its heap before free() shrinks it (sbrk)
TRIM_THRESHOLD: Final = 8 * 1024 * 1024
_M_TRIM_THRESHOLD: Final = -1  # mallopt's parameter numbers (malloc.h)
_M_MMAP_THRESHOLD: Final = -3


def tune_malloc() -> bool:
    """glibc raises its mmap threshold each time a large block is freed (up to 32 MiB),
    after which the worker's large buffers (fetched record batches, group records of up
    to 512 KiB, produce requests) come from the heap and fragment it: RSS stayed at
    356-384 MiB after a 100k-message backlog (bench/e2e.py), 222 MiB with the threshold
    fixed at 128 KiB (before ``trim_malloc`` existed).

    Fixed at 4 MiB, not 128 KiB: zstd's buffers and contexts (1-4 MiB a call: every
    record batch the worker compresses or decompresses) were fresh mmaps, faulted in page
    by page on every call. Thread CPU time of aiokafka's zstd calls in the worker's main
    process, a 100k-message bench/e2e.py run: decoding 0.28-0.37 s against 0.62-0.77 s,
    ~2.5x fewer page faults, 0.141 against 0.153 CPU s per 1000 messages (3 pairs); RSS
    with 1M live dedup keys 255 MiB (bench/restart.py; 287 MiB the last time at 128 KiB).

    Fixing it also fixes glibc's trim threshold (it would follow the mmap threshold, at
    twice it): left at its 128 KiB default, every batch's frees shrank the heap and the
    next batch's allocations grew it again, page by page; in the ingest process
    ``realloc`` (orjson's output buffers) was 7.6% of the CPU. So the trim threshold is
    set high too, and ``trim_malloc`` gives the free pages back every ``TRIM_INTERVAL``.
    True when both were set (glibc); elsewhere nothing is changed."""
    mallopt = _libc("mallopt", ctypes.c_int, ctypes.c_int)
    return (
        mallopt is not None
        and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
        and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    )


@cache
def _libc(name: str, *argtypes: Any) -> Callable[..., int] | None:
    """A function of the C library this process runs on (``int`` result), or None where
    it has none (not glibc)."""
    try:
        fn = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


# seconds between two malloc_trim calls of a long-running process (worker, ingest child)
TRIM_INTERVAL: Final = 10.0


def trim_malloc() -> bool:
    """Give the heap's free pages back to the system (glibc ``malloc_trim(0)``). The
    worker frees most of what a batch allocated, but glibc keeps the freed small blocks
    of its heap mapped: the worker's process held 210 MiB of RSS during a bench's live
    phase and 137 MiB right after one call. Called every ``TRIM_INTERVAL`` s (a few ms
    each). True when glibc trimmed something; False elsewhere or when nothing was free."""
    trim = _libc("malloc_trim", ctypes.c_size_t)
    return trim is not None and bool(trim(0))


def tune_gc() -> None:
    """Call once after imports and app set-up, before processing starts."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


@contextmanager
def batch_without_cyclic_gc() -> Iterator[None]:
    """A bounded batch run that keeps all its results until the end (``convstream
    process``): the collector would rescan the growing heap of kept records again and
    again and free nothing (reference counting frees the rest; the pipeline makes no
    cycles). Off for the run, back as it was after it (cycles made meanwhile, e.g. by
    a caught exception, wait for the next collection). Measured on the full offline path
    (bench/offline.py, 100k messages): 10-15% of its CPU time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
