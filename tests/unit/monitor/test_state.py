"""The monitor's saved state: any size, two slots, retired versions deleted, forgeries refused."""

from __future__ import annotations

import random
import zlib
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.spec import load_spec
from loanstream.streams import Record
from monitor.metrics import MonitorMetrics
from monitor.service import MonitorCore
from monitor.settings import MonitorSettings
from monitor.state import PART_BYTES, SavedState, StateWriter, read_saved

APP = "monitor-test"


def pipeline_state(version: int, features: int = 40, bins: int = 20) -> dict[str, Any]:
    """About the shape of a pipeline's state: per feature, histograms of ``bins`` x 60 panes."""
    rng = random.Random(version)
    return {
        "model": ["m", str(version)],
        "data": {
            f"feature_{i}": [[rng.randrange(10_000) for _ in range(bins)] for _ in range(60)]
            for i in range(features)
        },
        "performance": [rng.random() for _ in range(2_000)],
        "non_finite": "inf",
    }


class Topic:
    """A compacted topic: the newest value per key; a tombstone deletes the key."""

    def __init__(self) -> None:
        self.latest: dict[bytes, bytes] = {}

    def send(self, records: list[Record]) -> None:
        for record in records:
            assert record.key is not None
            if record.value is None:
                self.latest.pop(record.key, None)
            else:
                assert len(record.value) <= PART_BYTES + 1024, "every record can be sent"
                self.latest[record.key] = record.value


def snapshot(
    writer: StateWriter, topic: Topic, states: dict[str, Any], crash: bool = False
) -> None:
    parts, manifest = writer.records(states, b"[]")
    topic.send(parts)
    if not crash:
        topic.send([manifest])
        writer.sent()


def test_ten_versions_of_forty_features_come_back_exactly_whatever_their_size() -> None:
    states = {str(v): pipeline_state(v, bins=100) for v in range(1, 11)}
    topic, writer = Topic(), StateWriter("state", APP)
    snapshot(writer, topic, states)
    assert len(topic.latest) > 1 + len(states)  # some versions needed several parts
    saved = read_saved(topic.latest, APP)
    assert saved.unreadable == {}
    assert orjson.dumps(saved.pipelines) == orjson.dumps(states)


def test_a_monitor_killed_while_writing_leaves_the_last_whole_snapshot_readable() -> None:
    topic, writer = Topic(), StateWriter("state", APP)
    first = {str(v): pipeline_state(v, features=5) for v in (1, 2)}
    snapshot(writer, topic, first)
    second = {str(v): pipeline_state(v + 100, features=5) for v in (1, 2)}
    snapshot(writer, topic, second, crash=True)  # parts sent, manifest never
    assert read_saved(topic.latest, APP).pipelines == first
    # the restarted monitor writes the slot no manifest points at, then the other
    restarted = StateWriter("state", APP)
    restarted.resume(read_saved(topic.latest, APP))
    snapshot(restarted, topic, second)
    assert read_saved(topic.latest, APP).pipelines == second
    snapshot(restarted, topic, first)
    assert read_saved(topic.latest, APP).pipelines == first


def test_retired_versions_leave_the_topic_in_both_slots() -> None:
    topic, writer = Topic(), StateWriter("state", APP)
    snapshot(writer, topic, {str(v): pipeline_state(v, features=3) for v in range(1, 11)})
    snapshot(writer, topic, {str(v): pipeline_state(v, features=3) for v in range(1, 11)})
    kept = {str(v): pipeline_state(v, features=3) for v in (9, 10)}
    snapshot(writer, topic, kept)
    snapshot(writer, topic, kept)
    versions = {key.split(b"/")[2] for key in topic.latest if key != APP.encode()}
    assert versions == {b"9", b"10"}
    assert read_saved(topic.latest, APP).pipelines == kept


def test_a_tampered_part_costs_its_version_only_and_says_why() -> None:
    topic, writer = Topic(), StateWriter("state", APP)
    states = {str(v): pipeline_state(v, features=3) for v in (1, 2)}
    snapshot(writer, topic, states)
    topic.latest[f"{APP}/a/1/0".encode()] = zlib.compress(b'{"forged": true}')
    saved = read_saved(topic.latest, APP)
    assert saved.pipelines == {"2": states["2"]}
    assert saved.unreadable == {"1": "the parts do not match the manifest's sha256"}


def test_a_manifest_from_elsewhere_is_refused_with_its_reason() -> None:
    for manifest, reason in [
        (zlib.compress(b'{"format": 1, "pipelines": {}}'), "not JSON"),
        (b'{"format": 9}', "expected state format 2, got 9"),
        (b'{"format": 2, "slot": "../x", "versions": {}}', "expected a slot"),
        (b"[1, 2]", "got 'list'"),
    ]:
        saved = read_saved({APP.encode(): manifest}, APP)
        assert saved.pipelines == {} and reason in saved.unreadable[""]
    bomb = zlib.compress(b"[" + b"0," * 200_000_000 + b"0]", 9)
    import hashlib

    manifest = orjson.dumps(
        {
            "format": 2,
            "slot": "a",
            "versions": {"1": {"parts": 1, "sha256": hashlib.sha256(bomb).hexdigest()}},
        }
    )
    saved = read_saved({APP.encode(): manifest, f"{APP}/a/1/0".encode(): bomb}, APP)
    assert "expands beyond" in saved.unreadable["1"]


def test_the_core_counts_and_skips_what_it_cannot_restore(tmp_path: Path) -> None:
    metrics = MonitorMetrics(CollectorRegistry())
    settings = MonitorSettings(data_dir=tmp_path)
    reference = {"1": {"not": "a reference"}}
    core = MonitorCore(KafkaSettings(), settings, load_spec(), metrics, reference, {}, {})
    saved = SavedState(pipelines={"1": {"format": 99}}, unreadable={"2": "missing parts"})
    assert core.restore(saved) == []
    value = metrics.registry.get_sample_value("loanstream_monitor_state_unreadable_total")
    assert value == 2.0
