"""Every topic of the system, declared once: name, partitions, retention, compaction.

``create_topics`` makes them idempotently and refuses to paper over a topic that exists with
another partition count (Faust tables need changelogs shaped like their source topic).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from loanstream.config import KafkaSettings
from loanstream.errors import TopicError

DAY_MS = 24 * 3600 * 1000
FOREVER = "-1"

APPLICATIONS = "loan.applications"
PREDICTIONS = "loan.predictions"
OUTCOMES = "loan.outcomes"
LABELLED = "loan.labelled"
DRIFT_EVENTS = "loan.drift-events"
RETRAIN_REQUESTS = "loan.retrain-requests"
MODEL_UPDATES = "loan.model-updates"
DEAD_LETTER = "loan.dead-letter"
MONITOR_STATE = "loan.monitor-state"
RETRAIN_RESULTS = "loan.retrain-results"
SHADOW_PREDICTIONS = "loan.shadow-predictions"

# Applications, predictions, outcomes and labelled examples are all keyed by application_id and
# share one partition count, so the monitor's join sees an id's prediction and outcome together.
KEYED_PARTITIONS = 6

# Records carry their event time as timestamp, and a replay of last year's history carries last
# year's times: time-based retention would delete a backtest's records within minutes of writing
# them. Topics that carry event times are therefore bounded by size, not age.
# For the same reason they accept any timestamp: since Kafka 4.0 a broker refuses a record stamped
# more than an hour ahead of its clock (message.timestamp.after.max.ms), and a simulated stream
# runs event time ahead of the wall clock (the soak's 30 minutes at 1,000/s span 3.4 event years:
# its records were refused after 17 minutes).
GIB = 1024**3
ANY_TIME = {"message.timestamp.after.max.ms": str(2**63 - 1)}
BY_SIZE = {"retention.ms": FOREVER, "retention.bytes": str(GIB), **ANY_TIME}  # per partition


@dataclass(frozen=True)
class TopicSpec:
    """One declared topic. ``scales``: its partition count follows LOANSTREAM_KAFKA_PARTITIONS."""

    name: str
    partitions: int
    description: str
    config: Mapping[str, str] = field(default_factory=dict)

    @property
    def scales(self) -> bool:
        return self.partitions == KEYED_PARTITIONS


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(APPLICATIONS, KEYED_PARTITIONS, "applications to score", BY_SIZE),
    TopicSpec(
        PREDICTIONS,
        KEYED_PARTITIONS,
        "probability and decision per application",
        BY_SIZE,
    ),
    TopicSpec(
        SHADOW_PREDICTIONS,
        KEYED_PARTITIONS,
        "a challenger's probability per application, beside the champion's; decides nothing",
        BY_SIZE,
    ),
    TopicSpec(
        OUTCOMES,
        KEYED_PARTITIONS,
        "late repayment outcomes (labels)",
        BY_SIZE,
    ),
    TopicSpec(
        LABELLED,
        KEYED_PARTITIONS,
        "predictions joined with outcomes: the training log",
        {"retention.ms": FOREVER, **ANY_TIME},
    ),
    TopicSpec(
        DRIFT_EVENTS, 1, "one event per confirmed drift, with evidence", {"retention.ms": FOREVER}
    ),
    TopicSpec(
        RETRAIN_REQUESTS,
        1,
        "debounced requests for a new model",
        {"retention.ms": str(30 * DAY_MS)},
    ),
    TopicSpec(
        RETRAIN_RESULTS,
        1,
        "how each retrain round ended: promoted, champion kept and why, waiting for labels",
        {"retention.ms": str(90 * DAY_MS)},
    ),
    TopicSpec(
        MODEL_UPDATES,
        1,
        "promoted champions; last value per model = current",
        {
            "cleanup.policy": "compact",
            "min.cleanable.dirty.ratio": "0.1",
            "segment.ms": str(3600 * 1000),
        },
    ),
    TopicSpec(
        MONITOR_STATE,
        1,
        "the monitor's detector and window state, last snapshot per monitor app",
        {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "600000"},
    ),
    TopicSpec(
        DEAD_LETTER,
        1,
        "messages a consumer could not use, with the reason",
        {"retention.ms": str(30 * DAY_MS)},
    ),
)


@dataclass(frozen=True)
class TopicState:
    """What the broker has for one declared topic."""

    name: str
    declared_partitions: int
    partitions: int | None  # None: the topic does not exist
    replication: int | None
    config: Mapping[str, str]
    description: str

    @property
    def exists(self) -> bool:
        return self.partitions is not None


def _admin(settings: KafkaSettings) -> AdminClient:
    return AdminClient(settings.confluent())


def declared(settings: KafkaSettings) -> list[TopicSpec]:
    """The declaration with the configured prefix and partition override applied."""
    return [
        TopicSpec(
            settings.topic(t.name),
            settings.partitions if settings.partitions and t.scales else t.partitions,
            t.description,
            t.config,
        )
        for t in TOPICS
    ]


def describe_topics(settings: KafkaSettings, timeout: float = 10.0) -> list[TopicState]:
    admin = _admin(settings)
    topics = declared(settings)
    metadata = admin.list_topics(timeout=timeout).topics
    present = [t for t in topics if t.name in metadata and not metadata[t.name].error]
    configs: dict[str, Mapping[str, str]] = {}
    if present:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, t.name) for t in present]
        for resource, future in admin.describe_configs(resources).items():
            entries = future.result(timeout)
            configs[resource.name] = {
                key: entries[key].value
                for key in ("cleanup.policy", "retention.ms", "retention.bytes")
                if key in entries
            }
    states = []
    for t in topics:
        meta = metadata.get(t.name)
        exists = meta is not None and not meta.error
        partitions = meta.partitions if meta is not None and exists else {}
        states.append(
            TopicState(
                name=t.name,
                declared_partitions=t.partitions,
                partitions=len(partitions) if exists else None,
                replication=len(next(iter(partitions.values())).replicas) if partitions else None,
                config=configs.get(t.name, {}),
                description=t.description,
            )
        )
    return states


def changelog(name: str, settings: KafkaSettings) -> TopicSpec:
    """A Faust table's changelog, shaped like the keyed topics its table is partitioned by."""
    return TopicSpec(
        name,
        settings.partitions or KEYED_PARTITIONS,
        "a Faust table's changelog",
        {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"},
    )


def create_topics(
    settings: KafkaSettings, timeout: float = 30.0, extra: Sequence[TopicSpec] = ()
) -> list[str]:
    """Create every declared topic (and ``extra``, named as given) that is missing; return the
    names created.

    Idempotent. Raises :class:`TopicError` if a topic exists with another partition count.
    """
    admin = _admin(settings)
    topics = [*declared(settings), *extra]
    existing = admin.list_topics(timeout=timeout).topics
    missing = [t for t in topics if t.name not in existing]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    t.name,
                    num_partitions=t.partitions,
                    replication_factor=settings.replication_factor,
                    config=dict(t.config),
                )
                for t in missing
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result(timeout)
                created.append(name)
            except KafkaException as err:
                if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicError(f"cannot create topic {name}: {err.args[0].str()}") from None
    wrong = [
        f"{s.name} has {s.partitions} partitions, declared {s.declared_partitions}"
        for s in describe_topics(settings, timeout)
        if s.exists and s.partitions != s.declared_partitions
    ]
    if wrong:
        raise TopicError(
            "topics exist with another shape (delete them or set LOANSTREAM_KAFKA_PARTITIONS): "
            + "; ".join(wrong)
        )
    return created
