"""convstream: validate, hash, deduplicate and attribute ad conversions on Kafka.

The modules in this package are the pure core (no Kafka, no Faust), except
``app.py`` and ``topics.py`` which declare the Faust application. The per-event
modules may run compiled (mypyc); ``streams/core.py`` chooses, before any is imported.
"""

from streams import core as _core

__version__ = "0.1.0"
CORE: str = _core.select()  # "compiled" or "pure" (CONVSTREAM_CORE: auto, pure, compiled)
