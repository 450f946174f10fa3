import json
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
import yaml
from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.contracts import DeadLetter, Outcome
from loanstream.files import HistoryWriter
from loanstream.spec import load_spec
from loanstream.topics import APPLICATIONS, DEAD_LETTER, OUTCOMES, create_topics
from loanstream.validation import ApplicationValidator
from producer.emitter import Pacing
from producer.generator import Generator
from producer.live import produce_live
from producer.manifest import manifest, write_manifest
from producer.metrics import ProducerMetrics
from producer.outcomes import OUTCOME_TIME, LabelPolicy
from producer.replay import ReplayOptions, replay
from producer.scenarios import load_scenario
from producer.world import load_world
from tests.integration.consume import read_all

SPEC = load_spec()


def generator(scenario: str, seed: int, **kw: object) -> Generator:
    return Generator(SPEC, load_world(None, SPEC), load_scenario(scenario), seed=seed, **kw)  # type: ignore[arg-type]


def test_fifty_thousand_applications_at_five_thousand_per_second(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    create_topics(kafka)
    g = generator("concept-drift", seed=21, labels=LabelPolicy(median_days=1, sigma=0.3))
    path = write_manifest(tmp_path / "manifest.json", manifest(g, 50_000, rate=5000))
    summary, interrupted = produce_live(
        kafka, g, 5000, ProducerMetrics(CollectorRegistry()), count=50_000
    )
    assert not interrupted and summary.failed == 0
    assert summary.rate == pytest.approx(5000, rel=0.05)

    apps = read_all(kafka, kafka.topic(APPLICATIONS), 50_000)
    ids = [m.key().decode() for m in apps]
    assert len(apps) == 50_000 and len(set(ids)) == 50_000
    validator = ApplicationValidator(SPEC)
    assert validator.parse(apps[0].value()).application_id == ids[0]

    rows = g.rows(0, 50_000)
    labelled = rows[rows[OUTCOME_TIME].notna()]
    outcomes = read_all(kafka, kafka.topic(OUTCOMES), len(labelled))
    assert len(outcomes) == len(labelled) == summary.outcomes
    app_time = {m.key(): m.timestamp()[1] for m in apps}
    truth = dict(zip(labelled[SPEC.id_column], labelled[SPEC.target_column], strict=True))
    for message in outcomes:
        outcome = Outcome.from_json(message.value())
        assert outcome.label == truth[outcome.application_id]
        assert message.timestamp()[1] > app_time[message.key()]  # labels come later
    assert (summary.labels, summary.withheld, summary.explored, summary.undecided) == (
        "all",
        0,
        0,
        0,
    )
    written = json.loads(path.read_text())
    assert written["selective_labels"] == {"mode": "all", "exploration": None}
    assert written["drifts"][0]["start_position"] == 20_000
    assert written["drifts"][0]["start_event_time"] == "2025-01-14T21:20:00+00:00"


def test_replaying_an_unsorted_200k_row_file_with_bad_rows(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    create_topics(kafka)
    rows = generator("stable", seed=5).rows(0, 200_000)
    rows = rows.sample(frac=1.0, random_state=2).reset_index(drop=True)
    rows.loc[[10, 50_000, 199_999], "credit_score"] = 9999
    rows.loc[77, "loan_purpose"] = "yacht"
    path = tmp_path / "history.parquet"
    writer = HistoryWriter(path)
    for start in range(0, len(rows), 50_000):
        writer.write(rows.iloc[start : start + 50_000])
    writer.close()

    report = tmp_path / "rejections.csv"
    summary, _ = replay(
        path,
        SPEC,
        kafka,
        ReplayOptions(pacing=Pacing(), chunk_rows=40_000),
        ProducerMetrics(CollectorRegistry()),
        report,
    )
    assert summary.rejected == 4 and summary.by_reason == {"out_of_range": 4}
    rejected = pd.read_csv(report)
    assert sorted(rejected["row"]) == [10, 77, 50_000, 199_999]
    assert rejected.set_index("row").loc[77, "error"].endswith("got string 'yacht'")

    apps = read_all(kafka, kafka.topic(APPLICATIONS), 199_996)
    assert len(apps) == 199_996 and len({m.key() for m in apps}) == 199_996
    by_partition: dict[int, list[int]] = defaultdict(list)
    for m in apps:
        by_partition[m.partition()].append(m.timestamp()[1])
    for stamps in by_partition.values():  # event time never decreases in produce order
        assert stamps == sorted(stamps)
    letters = [
        DeadLetter.from_json(m.value()) for m in read_all(kafka, kafka.topic(DEAD_LETTER), 4)
    ]
    assert sorted(d.offset for d in letters) == [10, 77, 50_000, 199_999]
    assert all(d.source_topic == "file:history.parquet" for d in letters)
    first = min(letters, key=lambda d: d.offset)
    assert first.reason == "out_of_range" and "credit_score" in first.error
    assert first.value() is None and "9999" not in first.to_json().decode()  # no applicant data
    assert first.value_bytes and first.value_sha256


def test_a_file_with_other_columns_replays_with_its_own_spec(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    create_topics(kafka)
    spec_path = tmp_path / "cars.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "name": "car-loans",
                "id_column": "contract",
                "event_time_column": "signed",
                "target_column": "paid",
                "features": [
                    {"name": "vehicle_age", "type": "integer", "min": 0, "max": 30},
                    {"name": "price", "type": "numeric", "min": 1000, "max": 200000},
                    {
                        "name": "region",
                        "type": "categorical",
                        "values": ["north", "south"],
                        "nullable": True,
                    },
                ],
            }
        )
    )
    spec = load_spec(spec_path)
    t0 = pd.Timestamp("2024-06-01T00:00:00Z")
    frame = pd.DataFrame(
        {
            "contract": [f"c{i}" for i in range(1000)],
            "signed": [(t0 + pd.Timedelta(hours=i)).isoformat() for i in range(1000)],
            "vehicle_age": [i % 12 for i in range(1000)],
            "price": [5000.0 + i for i in range(1000)],
            "region": [
                None if i % 10 == 0 else ("north" if i % 2 else "south") for i in range(1000)
            ],
            "paid": [i % 3 != 0 for i in range(1000)],
        }
    )
    path = tmp_path / "cars.csv"
    frame.to_csv(path, index=False)
    began = time.monotonic()
    summary, _ = replay(
        path,
        spec,
        kafka,
        ReplayOptions(pacing=Pacing(), label_delay=pd.Timedelta(days=30)),
        ProducerMetrics(CollectorRegistry()),
        tmp_path / "rej.csv",
    )
    assert summary.rejected == 0 and summary.emitted is not None
    assert summary.emitted.applications == 1000 and summary.emitted.outcomes == 1000
    validator = ApplicationValidator(spec)
    apps = read_all(kafka, kafka.topic(APPLICATIONS), 1000)
    parsed = [validator.parse(m.value()) for m in apps]
    assert {a.application_id for a in parsed} == {f"c{i}" for i in range(1000)}
    assert time.monotonic() - began < 60
