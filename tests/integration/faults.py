"""Helpers of the fault tests: the services as one stack of processes, what the broker says
about topics, groups and the monitor's snapshots, the timeline of each kill (when, how long until
work resumed), a producer that holds labels back, and a deterministic corpus of hostile messages
written by kcat."""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import hypothesis
import hypothesis.strategies as st
import orjson
import pandas as pd
from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.kafka.broker import free_port
from loanstream.kafka.clients import IdempotentProducer
from loanstream.spec import FeatureSpec
from loanstream.topics import MONITOR_STATE, OUTCOMES
from monitor.reading import read_state
from monitor.state import OFFSETS_HEADER
from producer.emitter import EmitSummary, Emitter, Pacing, outcome_messages
from producer.generator import Generator
from producer.live import CHUNK
from producer.metrics import ProducerMetrics
from producer.outcomes import OUTCOME_TIME
from producer.rate import TokenBucket
from tests.integration.processes import Service

T = TypeVar("T")


def admin(kafka: KafkaSettings) -> AdminClient:
    return AdminClient({**kafka.confluent(), "socket.timeout.ms": 2000})


def end_offsets(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    """The high watermark of each partition of ``topic`` (raises while the broker is away)."""
    consumer = Consumer({**kafka.confluent(), "group.id": f"size-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=5).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def size(kafka: KafkaSettings, topic: str) -> int:
    """Messages ever written to ``topic`` (duplicates included)."""
    return sum(end_offsets(kafka, topic).values())


def group_stable(kafka: KafkaSettings, group: str, members: int = 1) -> bool:
    """Whether ``group`` has finished its rebalance with ``members`` members, all assigned."""
    client = admin(kafka)  # kept referenced: a collected client never completes its futures
    description = client.describe_consumer_groups([group], request_timeout=5)[group].result(10)
    return (
        description.state == ConsumerGroupState.STABLE
        and len(description.members) == members
        and all(m.assignment.topic_partitions for m in description.members)
    )


def metric(port: int, name: str, labels: str = "") -> float:
    """One sample of a service's /metrics (0 when absent); a sum over labels if none given."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if labels and line.startswith(f"{name}{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1])
        if not labels and (line.startswith(f"{name}{{") or line.startswith(f"{name} ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def duplicates(keys: Iterable[object]) -> int:
    """How many records repeat a key already seen (at-least-once delivery's extra copies)."""
    counts = Counter(keys)
    return sum(n - 1 for n in counts.values())


@dataclass
class Kill:
    """One SIGKILL and restart, and when the restarted process's work reached Kafka again."""

    service: str
    killed_at: float
    restarted_at: float
    restarted_wall: float  # time.time(), to compare with the services' own timestamps
    recovered_at: float | None = None

    @property
    def recovery_s(self) -> float | None:
        return None if self.recovered_at is None else self.recovered_at - self.restarted_at

    def watch(self, check: Callable[[], bool], timeout_s: float) -> threading.Thread:
        """Note in the background when ``check()`` first comes true (its output flows again)."""

        def run() -> None:
            with contextlib.suppress(AssertionError):
                self.recovered_at = await_(f"{self.service} to recover", check, timeout_s, 0.1)

        thread = threading.Thread(target=run, name=f"recovery-{self.service}", daemon=True)
        thread.start()
        return thread

    def __str__(self) -> str:
        took = "never" if self.recovery_s is None else f"{self.recovery_s:.1f} s"
        return f"{self.service}: restarted; its work flowed again {took} after the restart"


@dataclass
class Stack:
    """The services of one test as real processes, each replaceable by a fresh one.

    ``env`` is shared; each service gets a free metrics port per start, so the restarted
    process answers on a port of its own.
    """

    env: dict[str, str]
    logs: Path
    commands: dict[str, list[str]] = field(
        default_factory=lambda: {
            "scorer": ["scorer", "--api-port", "{port}"],
            "monitor": ["monitor", "--metrics-port", "{port}"],
            "trainer": ["trainer", "--metrics-port", "{port}"],
        }
    )
    running: dict[str, Service] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    everything: list[Service] = field(default_factory=list)
    starts: Counter[str] = field(default_factory=Counter)

    def start(self, name: str) -> Service:
        port = free_port()
        self.starts[name] += 1
        command = [part.replace("{port}", str(port)) for part in self.commands[name]]
        service = Service(command, self.env, self.logs / f"{name}-{self.starts[name]}.log")
        self.running[name], self.ports[name] = service, port
        self.everything.append(service)
        return service

    def kill_and_restart(self, name: str) -> Kill:
        killed = time.monotonic()
        self.running[name].stop(signal.SIGKILL)
        self.start(name)
        return Kill(name, killed, time.monotonic(), time.time())

    def metric(self, name: str, metric_name: str, labels: str = "") -> float:
        return metric(self.ports[name], metric_name, labels)

    def alive(self) -> dict[str, bool]:
        return {name: s.process.poll() is None for name, s in self.running.items()}

    def log_lines(self, name: str) -> int:
        """Lines every process of ``name`` wrote to its log."""
        return sum(
            len(s.log.read_bytes().splitlines())
            for s in self.everything
            if s.log.name.startswith(f"{name}-")
        )

    def log_tail(self, name: str, chars: int = 3000) -> str:
        return self.running[name].log.read_text(errors="replace")[-chars:]

    def skipped(self, name: str) -> int:
        """Records the restarted ``name`` skipped as counted by its restored snapshot (its log)."""
        total = 0
        for service in self.everything:
            if service.log.name.startswith(f"{name}-"):
                for line in service.log.read_text(errors="replace").splitlines():
                    if "skipped" in line and "the restored snapshot had counted" in line:
                        total += int(line.split("skipped ", 1)[1].split(" ", 1)[0])
        return total

    def stop(self) -> None:
        for service in self.everything:
            service.stop()


def await_(what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 0.25) -> float:
    """Wait until ``check()`` is true and return when (``time.monotonic()``); fail the test
    with ``what`` at the deadline. A service or broker not answering yet counts as false."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError, KafkaException):
            if check():
                return time.monotonic()
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def answered(what: str, ask: Callable[[], T], timeout_s: float) -> T:
    """``ask()``'s answer once the broker gives one (a broker just started has no partition
    leaders for a moment); fail the test with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ask()
        except KafkaException:
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer in {timeout_s:.0f} s for {what}") from None
            time.sleep(0.2)


def produce_holding_labels(
    kafka: KafkaSettings, generator: Generator, count: int, rate: float, hold_from: int
) -> tuple[EmitSummary, pd.DataFrame]:
    """``produce_live`` (applications at ``rate``, each outcome when its time comes), except
    that the outcomes of applications from position ``hold_from`` on are held back: they are
    returned, for ``send_outcomes`` to send when the test wants them to arrive."""
    scale = rate * generator.interval.total_seconds()
    emitter = Emitter(
        kafka,
        generator.spec,
        Pacing(rate=rate, time_scale=scale),
        ProducerMetrics(CollectorRegistry()),
        label_time=OUTCOME_TIME,
    )
    held = []
    for start in range(0, count, CHUNK):
        rows = generator.rows(start, min(CHUNK, count - start))
        late = (rows.index + start >= hold_from) & rows[OUTCOME_TIME].notna()
        held.append(rows[late])
        rows[OUTCOME_TIME] = rows[OUTCOME_TIME].mask(late)
        emitter.emit(rows)
    return emitter.finish(), pd.concat(held, ignore_index=True)


def send_outcomes(
    kafka: KafkaSettings, rows: pd.DataFrame, spec: FeatureSpec, rate: float | None = None
) -> int:
    """Send the outcomes of ``rows`` as the producer would have, at ``rate`` per second or at
    once; how many."""
    messages, _ = outcome_messages(rows, spec, OUTCOME_TIME)
    bucket = TokenBucket(rate) if rate else None
    with IdempotentProducer(kafka) as producer:
        sent = 0
        while sent < len(messages):
            n = bucket.take(len(messages) - sent) if bucket else len(messages)
            producer.produce_many(kafka.topic(OUTCOMES), messages[sent : sent + n])
            sent += n
    return len(messages)


def snapshot_offsets(kafka: KafkaSettings) -> dict[tuple[str, int], int]:
    """The source offsets the newest monitor snapshot on the test's topics covers."""
    topic = kafka.topic(MONITOR_STATE)
    consumer = Consumer({**kafka.confluent(), "group.id": f"state-{uuid.uuid4().hex}"})
    try:
        end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)[1]
        if end == 0:
            return {}
        consumer.assign([TopicPartition(topic, 0, end - 1)])
        message = consumer.poll(10)
        assert message is not None and message.error() is None, "no snapshot to read"
        raw = dict(message.headers() or []).get(OFFSETS_HEADER)
        return {(t, p): o for t, p, o in orjson.loads(raw or b"[]")}
    finally:
        consumer.close()


def replay_pending(kafka: KafkaSettings, group: str, topic: str) -> bool:
    """Whether a monitor restarted now would read again records of ``topic`` that its newest
    snapshot has counted (Faust has not committed that far yet)."""
    consumer = Consumer({**kafka.confluent(), "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=5).topics[topic].partitions
        done = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=5)
    finally:
        consumer.close()
    covered = snapshot_offsets(kafka)
    return any(covered.get((topic, tp.partition), -1) >= max(tp.offset, 0) for tp in done)


def snapshot_positions(kafka: KafkaSettings, app_id: str, version: str) -> dict[str, int]:
    """How many predictions and labelled examples the monitor's detectors of ``version`` have
    counted, by its newest snapshot (positions count from 0)."""
    saved = read_state(kafka, app_id)
    assert version in saved.pipelines, f"no monitor snapshot of version {version}"
    positions = saved.pipelines[version]["positions"]
    return {"predictions": positions["predictions"] + 1, "labelled": positions["labelled"] + 1}


# -- hostile messages -------------------------------------------------------------------------
# kcat reads messages from a file, split at these delimiters: no generated key or value may
# contain them (checked when the file is written).
MESSAGE_END = b"\x1e\x1fEND-OF-MESSAGE\x1f\x1e"
KEY_END = b"\x1d\x1fEND-OF-KEY\x1f\x1d"

_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
LITERALS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "nan",
    "inf",
    "1e999",
    "-1e999",
    "1e-999",
    "0x10",
    "+1",
    ".5",
    "01",
]
PLACEHOLDER = "\u2063HOSTILE\u2063"


@dataclass(frozen=True)
class Mutation:
    """One way to spoil a valid message: ``kind`` names it; ``apply(base)`` makes the bytes."""

    kind: str
    make: Callable[[dict[str, Any]], bytes]

    def apply(self, base: dict[str, Any]) -> bytes:
        return self.make(copy.deepcopy(base))


def _leaves(message: dict[str, Any]) -> list[tuple[str, ...]]:
    """Paths to the message's fields, the features' included."""
    paths: list[tuple[str, ...]] = []
    for key, value in message.items():
        paths.append((key,))
        if isinstance(value, dict):
            paths += [(key, inner) for inner in value]
    return paths


def _set(message: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    target = message
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return message


def _drop(message: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    target = message
    for part in path[:-1]:
        target = target[part]
    target.pop(path[-1], None)
    return message


def _dumps(message: Any) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _with_literal(message: dict[str, Any], which: int, literal: str) -> bytes:
    leaves = _leaves(message)
    return _dumps(_set(message, leaves[which % len(leaves)], PLACEHOLDER)).replace(
        json.dumps(PLACEHOLDER, ensure_ascii=False).encode(), literal.encode()
    )


def _replace(which: int, value: Any) -> Callable[[dict[str, Any]], bytes]:
    def make(m: dict[str, Any]) -> bytes:
        leaves = _leaves(m)
        return _dumps(_set(m, leaves[which % len(leaves)], value))

    return make


def _missing(which: frozenset[int]) -> Callable[[dict[str, Any]], bytes]:
    def make(m: dict[str, Any]) -> bytes:
        leaves = _leaves(m)
        for path in sorted({leaves[w % len(leaves)] for w in which}, key=len, reverse=True):
            _drop(m, path)
        return _dumps(m)

    return make


def _nested(which: int, depth: int, opener: str) -> Callable[[dict[str, Any]], bytes]:
    nest = "[" * depth + "]" * depth if opener == "[" else '{"a":' * depth + "1" + "}" * depth
    return lambda m: _with_literal(m, which, nest)


def _raw_in_string(which: int, raw: bytes) -> Callable[[dict[str, Any]], bytes]:
    """Bytes that are not UTF-8 inside one of the message's strings."""

    def make(m: dict[str, Any]) -> bytes:
        leaves = _leaves(m)
        body = _dumps(_set(m, leaves[which % len(leaves)], PLACEHOLDER))
        return body.replace(PLACEHOLDER.encode(), raw)

    return make


def _oversize(size: int, where: int) -> Callable[[dict[str, Any]], bytes]:
    def make(m: dict[str, Any]) -> bytes:
        body = _dumps(m)
        pad = size - len(body)
        if where % 2:  # whitespace: still valid JSON, only too long
            return body[:1] + b" " * pad + body[1:]
        m["padding"] = "x" * pad
        return _dumps(m)

    return make


def _truncated(at: int) -> Callable[[dict[str, Any]], bytes]:
    return lambda m: _dumps(m)[: at % max(1, len(_dumps(m)))]


MUTATIONS = st.one_of(
    st.binary(max_size=300).map(lambda b: Mutation("bytes", lambda m: b)),
    st.text(max_size=120).map(lambda t: Mutation("text", lambda m: t.encode())),
    st.builds(lambda w, v: Mutation("wrong_type", _replace(w, v)), st.integers(0, 99), JSON_VALUES),
    st.builds(
        lambda w, v: Mutation("huge_number", _replace(w, v)),
        st.integers(0, 99),
        st.integers(min_value=10**15)
        | st.integers(max_value=-(10**15))
        | st.floats(min_value=1e300),
    ),
    st.builds(
        lambda w, lit: Mutation("literal", lambda m: _with_literal(m, w, lit)),
        st.integers(0, 99),
        st.sampled_from(LITERALS),
    ),
    st.builds(
        lambda w, t: Mutation("unicode", _replace(w, t)),
        st.integers(0, 99),
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=80),
    ),
    st.builds(
        lambda w, b: Mutation("invalid_utf8", _raw_in_string(w, b)),
        st.integers(0, 99),
        st.binary(min_size=1, max_size=8).filter(lambda b: not _is_utf8(b)),
    ),
    st.builds(
        lambda w, d, o: Mutation("deep_nesting", _nested(w, d, o)),
        st.integers(0, 99),
        st.integers(10, 2000),  # parsers give up at a few hundred levels
        st.sampled_from(["[", "{"]),
    ),
    st.builds(
        lambda ws: Mutation("missing_fields", _missing(ws)),
        st.frozensets(st.integers(0, 99), min_size=1, max_size=4),
    ),
    st.builds(
        lambda k, v: Mutation("unknown_field", lambda m: _dumps({**m, k: v})),
        st.text(max_size=20),
        JSON_VALUES,
    ),
    st.builds(lambda at: Mutation("truncated", _truncated(at)), st.integers(0, 10_000)),
    st.sampled_from([b"", b" ", b"null", b"{}", b"[]", b"0", b'""', b"\xef\xbb\xbf{}"]).map(
        lambda b: Mutation("empty", lambda m: b)
    ),
    st.builds(
        lambda s, w: Mutation("oversize", _oversize(s, w)),
        st.integers(64 * 1024 + 1, 64 * 1024 + 25),  # few: each costs 64 KiB here and there
        st.integers(0, 1),
    ),
)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def hostile_corpus(n: int) -> list[Mutation]:
    """``n`` mutations, the same ones on every run.

    Hypothesis draws them, one per example of a derandomized run: ``derandomize=True`` seeds
    its generator from the collecting function, ``database=None`` replays nothing saved, and only
    the generate phase runs (no shrinking). A run is limited to a few thousand choices, far too
    few for 10,000 messages, hence one mutation per example; each is applied to a valid message
    built from the message's own index, so the corpus does not depend on the broker round trip.
    """
    drawn: list[Mutation] = []

    @hypothesis.settings(
        max_examples=n,
        derandomize=True,
        database=None,
        phases=[hypothesis.Phase.generate],
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(MUTATIONS)
    def collect(mutation: Mutation) -> None:
        if len(drawn) < n:
            drawn.append(mutation)

    collect()
    return drawn


def kcat_produce(
    bootstrap_servers: str,
    topic: str,
    messages: list[tuple[bytes, bytes]],
    path: Path,
    null_empty: bool = False,
) -> None:
    """Write ``(key, value)`` messages to ``topic`` with kcat, a librdkafka client of its own.

    They go through a file, split at ``MESSAGE_END`` and ``KEY_END``: binary values, newlines
    and NUL bytes pass unchanged. ``null_empty`` sends empty values (and keys) as NULL.
    """
    for key, value in messages:
        for part in (key, value):
            assert MESSAGE_END not in part and KEY_END not in part, "a delimiter in a message"
    path.write_bytes(b"".join(key + KEY_END + value + MESSAGE_END for key, value in messages))
    binary = shutil.which("kcat")
    assert binary, "kcat is not installed: `make tools` (apt-get install kcat) installs it"

    def escaped(delimiter: bytes) -> str:
        return "".join(f"\\x{byte:02x}" for byte in delimiter)

    command = [binary, "-b", bootstrap_servers, "-P", "-t", topic, "-l", str(path)]
    command += ["-D", escaped(MESSAGE_END), "-K", escaped(KEY_END)] + (["-Z"] if null_empty else [])
    subprocess.run(command, capture_output=True, timeout=120, check=True)
