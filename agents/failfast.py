"""Stop the process, now, when a stage fails for a reason that is not the data.

Faust acks a batch from ``take_events`` in a ``finally`` block, so an exception in an
agent body (or a graceful stop after one) would silently drop the batch. Pipeline code
never raises on data; what can still raise is a bug or a broker that stays unreachable
past the client's timeouts. Then the worker exits at once, with nothing acked or
committed, and the batch is processed again after the restart: a visible crash loop
instead of silent data loss.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("convstream.failfast")

EXIT_CODE = 70  # EX_SOFTWARE


def die(stage: str, exc: BaseException) -> None:
    log.critical(
        "stage failed; exiting without acking the batch",
        extra={"stage": stage},
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_CODE)
