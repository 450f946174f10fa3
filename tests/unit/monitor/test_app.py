"""The monitor's join tables keep their changes until the batch that made them is sent."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from loanstream.config import KafkaSettings
from loanstream.streams import Record, faust_app
from monitor.app import KeyPartitionedTable


def table() -> KeyPartitionedTable:
    app = faust_app(KafkaSettings(bootstrap_servers="127.0.0.1:1"), "table-test", 10.0, 60.0)
    return KeyPartitionedTable(
        app,
        name="pending",
        partitions=6,
        key_type=bytes,
        value_type=bytes,
        changelog_topic=app.topic(
            "pending-changelog", partitions=6, key_serializer="raw", value_serializer="raw"
        ),
    )


def test_changes_are_the_last_write_per_key_at_the_keys_murmur2_partition() -> None:
    pending = table()
    pending[b"a-1"] = b"first"
    pending[b"a-2"] = b"kept"
    pending[b"a-1"] = b"second"
    pending[b"a-3"] = b"gone"
    del pending[b"a-3"]
    del pending[b"a-1"]

    partition = DefaultPartitioner()
    six = list(range(6))
    assert pending.changes() == [
        Record("pending-changelog", b"a-1", None, partition=partition(b"a-1", six, six)),
        Record("pending-changelog", b"a-2", b"kept", partition=partition(b"a-2", six, six)),
        Record("pending-changelog", b"a-3", None, partition=partition(b"a-3", six, six)),
    ]
    assert dict(pending) == {b"a-2": b"kept"}  # the table itself holds its data as before
    assert pending.changes() == []  # handed over once


def test_a_key_set_and_deleted_in_one_batch_is_still_deleted_in_the_changelog() -> None:
    # A tombstone even for a key the changelog never saw: cheap, and always right after a
    # restart that recovered an older value of it.
    pending = table()
    pending[b"a-9"] = b"x"
    del pending[b"a-9"]
    assert [(r.key, r.value) for r in pending.changes()] == [(b"a-9", None)]
