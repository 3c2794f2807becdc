"""The Grafana dashboard and the Prometheus alert rules only query metrics the worker
exports (a renamed metric would leave a panel empty and an alert silent)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.metrics import COLLECT_REGISTRY, REGISTRY

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
}


def exported() -> set[str]:
    names = set()
    for family in (*REGISTRY.collect(), *COLLECT_REGISTRY.collect()):
        names.update(family.name + s for s in SUFFIXES[family.type])
    return names


@pytest.mark.parametrize(
    "path",
    [
        DEPLOY / "grafana" / "dashboards" / "convstream.json",
        DEPLOY / "prometheus" / "alerts.yml",
    ],
    ids=lambda p: p.name,
)
def test_every_queried_metric_is_exported(path: Path) -> None:
    queried = set(re.findall(r"\bconvstream_[a-z_]+", path.read_text()))
    assert queried, "no convstream metric found: the file moved or changed format"
    assert queried - exported() == set()

