"""Faust agents: thin wiring from topics to the pure core in ``streams`` and back to topics."""
