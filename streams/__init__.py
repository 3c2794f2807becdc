"""convstream: validate, hash, deduplicate and attribute ad conversions on Kafka.

The modules in this package are the pure core (no Kafka, no Faust), except
``app.py`` and ``topics.py`` which declare the Faust application.
"""

__version__ = "0.1.0"
