"""A clean restart on the same data directory does not replay the changelog (issue:
fast restarts). The stateful stages write their table's local store themselves
(agents/stage.py), so they also record, in the same RocksDB write batch, the offset of
the last changelog record the store holds; Faust's recovery starts reading there."""

from __future__ import annotations

import asyncio

import pytest

from agents import kafka_io
from bench.stores import persisted_offset, recoveries
from tests.helpers import RECEIVED_AT
from tests.integration.conftest import all_topics
from tests.integration.test_dedup import browser, conversions, server

pytestmark = pytest.mark.integration


def test_a_clean_restart_replays_at_most_one_record_per_changelog_partition(
    make_settings, start_worker, kafka
) -> None:
    s = make_settings(partitions=2)
    kafka.create_topics(s, all_topics(s))
    w = start_worker(s)
    msgs = [server(f"r-{i}", RECEIVED_AT + i) for i in range(300)]
    kafka.produce(s, s.topics.server_raw, msgs)
    assert len({r["conversion_id"] for r in conversions(kafka, s, expect=300)}) == 300
    w.stop()  # clean: every batch finished
    changelog = f"{s.app_id}-dedup-changelog"
    ends = asyncio.run(kafka_io.end_offsets(s, changelog))
    assert sum(ends.values()) >= 300  # one e| key per conversion, plus progress
    for partition, end in ends.items():
        if end:  # recovery starts at the last record the store holds: it replays <= 1
            assert persisted_offset(s.data_dir, "dedup", partition) == end - 1
    # the state is still there after the restart: a late copy is a duplicate
    w2 = start_worker(s)
    # Faust's own account: its recovery read nothing (its "Reading Starts At" offsets
    # are the highwaters)
    recovery = recoveries(w2.log)[0]
    assert set(recovery.highwater) >= {(changelog, p) for p in ends}
    assert {tp: recovery.records_read(tp) for tp in recovery.highwater} == dict.fromkeys(
        recovery.highwater, 0
    )
    kafka.produce(s, s.topics.pixel_raw, [browser("r-7", RECEIVED_AT + 400)])
    w2.wait_metric("convstream_duplicates_total", 1, timeout=30)
    assert len(conversions(kafka, s, expect=301, idle=3)) == 300
