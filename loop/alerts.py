"""``loanstream alerts``: each drift alert told as a person reads it, with what the loop did.

An alert is one DriftEvent (loan.drift-events) with the retrain requests that name it
(``drift_event_id``, retries included), the RetrainResult records that answer them
(``request_ids`` / ``drift_event_ids``), the ModelUpdate of a version it got promoted, and the
requests the trainer dead-lettered. The pure part (:func:`assemble`, :func:`tell`,
:func:`as_json`, :class:`Tail`) needs no broker; the shell reads the five single-partition
topics from their beginning with one consumer that commits nothing and joins no group.

The retrain status of an alert is that of its newest request (highest attempt): the last result
that covers it, else ``dead_lettered`` or ``no_answer``; with no request, that of the last
result naming the event, else ``no_retrain``. Statuses: ``promoted``, ``kept_champion``,
``shadowing``, ``failed``, ``waiting`` (the round waits for labels), ``no_answer`` (no word
from the trainer yet), ``dead_lettered``, ``no_retrain``.

``--json`` prints one object a line, one per drift event, newest last, with these keys:
``update`` (false; true on a later line about an alert already printed, in ``--follow``),
``event_id``, ``signal``, ``detector``, ``feature``, ``model_name``, ``model_version``,
``statistic``, ``statistic_name``, ``threshold``, ``p_value``, ``psi_band`` (null unless the
statistic is a PSI), ``window_size``, ``first_position``, ``confirmed_position``,
``events_between``, ``first_event_time``, ``confirmed_event_time``, ``detected_at``, ``text``,
``retrain_status``, ``retrain_text``, ``requests`` (request_id, attempt, requested_by,
requested_at, reason, min_rows), ``results`` (outcome, reason, request_ids, challenger_version,
champion_version, metrics, champion_metrics, rows, rows_needed, finished_at),
``promoted_version``, ``promoted_update`` (version, run_id, model_uri, metrics, promoted_at, or
null) and ``dead_lettered_requests`` (request_id, error). Times are ISO 8601 in UTC.

Nothing read is unpickled or executed: every value is parsed as its JSON contract, and one that
does not parse is counted and skipped.
"""

from __future__ import annotations

import re
import signal as signals  # `signal` is the command's option
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from pydantic import ValidationError

from loanstream.config import KafkaSettings, kafka_settings
from loanstream.contracts import (
    Contract,
    DeadLetter,
    DriftEvent,
    DriftSignal,
    ModelUpdate,
    RetrainOutcome,
    RetrainRequest,
    RetrainResult,
)
from loanstream.errors import LoanStreamError
from loanstream.topics import (
    DEAD_LETTER,
    DRIFT_EVENTS,
    MODEL_UPDATES,
    RETRAIN_REQUESTS,
    RETRAIN_RESULTS,
)
from loop.telling import (
    drift_sentence,
    effect,
    measured,
    psi_band,
    result_sentence,
    statistic_name,
)

NO_ANSWER, DEAD_LETTERED, NO_RETRAIN = "no_answer", "dead_lettered", "no_retrain"
# fmt: off
EVENT_FIELDS = (
    "event_id", "signal", "detector", "feature", "model_name", "model_version", "statistic",
    "threshold", "p_value", "window_size", "first_position", "confirmed_position",
    "first_event_time", "confirmed_event_time", "detected_at", "expected_rate", "observed_rate",
)  # the DriftEvent fields every JSON line carries, whatever fields the contract gains
# fmt: on
READ: dict[str, type[Contract]] = {
    DRIFT_EVENTS: DriftEvent,
    RETRAIN_REQUESTS: RetrainRequest,
    RETRAIN_RESULTS: RetrainResult,
    MODEL_UPDATES: ModelUpdate,
    DEAD_LETTER: DeadLetter,
}


@dataclass(frozen=True)
class Alert:
    """One drift event and what the loop did about it."""

    event: DriftEvent
    requests: tuple[RetrainRequest, ...] = ()
    results: tuple[RetrainResult, ...] = ()
    promoted: ModelUpdate | None = None  # the update of the version this alert got promoted
    dead_lettered: tuple[tuple[str, str], ...] = ()  # (request_id, error) the trainer refused

    @property
    def last_result(self) -> RetrainResult | None:
        """The result that tells the status (see the module docstring), if any."""
        if not self.requests:
            return self.results[-1] if self.results else None
        newest = self.requests[-1]
        covering = [r for r in self.results if _covers(r, newest, self.event.event_id)]
        return covering[-1] if covering else None

    @property
    def status(self) -> str:
        last = self.last_result
        if last is not None:
            return last.outcome.value
        if not self.requests:
            return NO_RETRAIN
        refused = {request_id for request_id, _ in self.dead_lettered}
        return DEAD_LETTERED if self.requests[-1].request_id in refused else NO_ANSWER


def _covers(result: RetrainResult, request: RetrainRequest, event_id: str) -> bool:
    if result.request_ids:
        return request.request_id in result.request_ids
    return event_id in result.drift_event_ids


def assemble(
    drift_events: Iterable[DriftEvent],
    requests: Iterable[RetrainRequest],
    results: Iterable[RetrainResult],
    updates: Iterable[ModelUpdate],
    refused: Mapping[str, str] | None = None,
) -> list[Alert]:
    """One alert per drift event (a republished event id counts once), in topic order, each
    with its requests (by attempt), results (by finish time) and promoted update; ``refused``
    maps dead-lettered request ids to the trainer's error."""
    by_event: dict[str, list[RetrainRequest]] = {}
    for request in requests:
        if request.drift_event_id is not None:
            by_event.setdefault(request.drift_event_id, []).append(request)
    results, updates, refused = list(results), list(updates), refused or {}
    alerts: dict[str, Alert] = {}
    for event in drift_events:
        if event.event_id in alerts:
            continue
        asked = _unique(sorted(by_event.get(event.event_id, []), key=lambda r: r.attempt))
        ids = {r.request_id for r in asked}
        answered = sorted(
            (r for r in results if ids & set(r.request_ids) or event.event_id in r.drift_event_ids),
            key=lambda r: r.finished_at,
        )
        alert = Alert(
            event,
            tuple(asked),
            tuple(answered),
            dead_lettered=tuple((i, refused[i]) for i in sorted(ids) if i in refused),
        )
        last = alert.last_result
        if last is not None and last.outcome == RetrainOutcome.PROMOTED:
            alert = replace(alert, promoted=_update_of(last, updates))
        alerts[event.event_id] = alert
    return list(alerts.values())


def _unique(requests: list[RetrainRequest]) -> list[RetrainRequest]:
    seen: dict[str, RetrainRequest] = {}
    for request in requests:
        seen.setdefault(request.request_id, request)
    return list(seen.values())


def _update_of(result: RetrainResult, updates: Sequence[ModelUpdate]) -> ModelUpdate | None:
    version = result.challenger_version or result.champion_version
    found = [u for u in updates if u.model_name == result.model_name and u.version == version]
    return found[-1] if found else None


def select(
    alerts: Iterable[Alert],
    since: datetime | None = None,
    signals: Iterable[DriftSignal] = (),
    model: str | None = None,
) -> list[Alert]:
    """The alerts detected at or after ``since``, of the given signals (all if none) and model."""
    wanted = set(signals)
    return [
        a
        for a in alerts
        if (since is None or a.event.detected_at >= since)
        and (not wanted or a.event.signal in wanted)
        and (model is None or a.event.model_name == model)
    ]


def retrain_text(alert: Alert) -> str:
    """How the retrain this alert asked for ended, or where it stands."""
    last, status = alert.last_result, alert.status
    if last is not None:
        return result_sentence(last)
    if status == NO_RETRAIN:
        return "no retrain asked (cooldown, or this signal does not trigger one)"
    if status == DEAD_LETTERED:
        error = dict(alert.dead_lettered)[alert.requests[-1].request_id]
        return f"the trainer refused the request: {error}"
    return "no answer from the trainer yet"


def _between(e: DriftEvent) -> str:
    kind = "predictions" if e.signal in (DriftSignal.DATA, DriftSignal.PREDICTION) else "labelled"
    count = max(0, e.confirmed_position - e.first_position)
    return f"{count:,} {kind} events" if kind == "labelled" else f"{count:,} {kind}"


def _t(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def tell(alert: Alert) -> str:
    """A compact block for a terminal: what moved, since when, which model, what came of it."""
    e = alert.event
    subject = f" in {e.feature}" if e.feature else ""
    lines = [
        f"{_t(e.detected_at)}  {e.signal.value.upper()} drift{subject} on {e.model_name} "
        f"v{e.model_version}  [{e.event_id}]",
        f"  moved:   {measured(e)} ({e.detector}, window {e.window_size:,})",
        f"  since:   position {e.first_position:,} ({_t(e.first_event_time)}) -> confirmed at "
        f"{e.confirmed_position:,} ({_t(e.confirmed_event_time)}), {_between(e)} between",
    ]
    if (found := effect(e)) is not None:
        lines.insert(2, f"  effect:  {found}")
    for r in alert.requests:
        lines.append(f"  retrain: {r.request_id} (attempt {r.attempt}, by {r.requested_by})")
    for result in alert.results:
        if result is not alert.last_result:
            lines.append(f"  earlier: {result_sentence(result)}")
    lines.append(f"  outcome: {retrain_text(alert)}")
    if alert.promoted is not None:
        lines.append(f"  serving: v{alert.promoted.version} since {_t(alert.promoted.promoted_at)}")
    return "\n".join(lines)


def update_line(alert: Alert) -> str:
    """One line for an alert already printed whose retrain moved on (``--follow``)."""
    return f"update {alert.event.event_id}: {retrain_text(alert)}"


def as_json(alert: Alert, update: bool = False) -> dict[str, Any]:
    """The alert as one flat JSON object with the stable keys of the module docstring."""
    e = alert.event
    promoted = alert.promoted
    return {
        "update": update,
        **e.model_dump(mode="json", include=set(EVENT_FIELDS)),
        "statistic_name": statistic_name(e),
        "psi_band": psi_band(e.statistic) if e.detector.startswith("psi") else None,
        "events_between": max(0, e.confirmed_position - e.first_position),
        "text": drift_sentence(e),
        "retrain_status": alert.status,
        "retrain_text": retrain_text(alert),
        "requests": [
            r.model_dump(
                mode="json",
                include={
                    "request_id",
                    "attempt",
                    "requested_by",
                    "requested_at",
                    "reason",
                    "min_rows",
                },
            )
            for r in alert.requests
        ],
        "results": [
            r.model_dump(mode="json", exclude={"schema_version", "model_name", "drift_event_ids"})
            for r in alert.results
        ],
        "promoted_version": (
            alert.last_result.challenger_version
            if alert.status == RetrainOutcome.PROMOTED and alert.last_result
            else None
        ),
        "promoted_update": (
            None
            if promoted is None
            else promoted.model_dump(
                mode="json", include={"version", "run_id", "model_uri", "metrics", "promoted_at"}
            )
        ),
        "dead_lettered_requests": [
            {"request_id": i, "error": error} for i, error in alert.dead_lettered
        ],
    }


def parse_since(text: str, now: datetime) -> datetime:
    """``7d``, ``12h``, ``30m``, ``90s`` before ``now``, or an ISO time (UTC if naive)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[match.group(2)]
        return now - timedelta(seconds=float(match.group(1)) * unit)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LoanStreamError(
            f"--since must look like 7d, 12h, 30m or an ISO time, got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Records:
    """Everything read so far from the five topics, parsed; what did not parse is counted."""

    drift_events: list[DriftEvent] = field(default_factory=list)
    requests: list[RetrainRequest] = field(default_factory=list)
    results: list[RetrainResult] = field(default_factory=list)
    updates: list[ModelUpdate] = field(default_factory=list)
    unreadable: dict[str, int] = field(default_factory=dict)
    request_at: dict[int, str] = field(default_factory=dict)  # offset -> request id
    refused_at: dict[int, str] = field(default_factory=dict)  # request offset -> error

    def add(self, topic: str, value: bytes | None, offset: int, requests_topic: str = "") -> None:
        """Parse one record of ``topic`` (a declared name); a tombstone is no record."""
        if value is None:
            return
        try:
            record = READ[topic].from_json(value)
        except (ValidationError, ValueError):
            self.unreadable[topic] = self.unreadable.get(topic, 0) + 1
            return
        if isinstance(record, DriftEvent):
            self.drift_events.append(record)
        elif isinstance(record, RetrainRequest):
            self.requests.append(record)
            self.request_at[offset] = record.request_id
        elif isinstance(record, RetrainResult):
            self.results.append(record)
        elif isinstance(record, ModelUpdate):
            self.updates.append(record)
        elif isinstance(record, DeadLetter) and record.source_topic == requests_topic:
            self.refused_at[record.offset] = record.error

    def alerts(self) -> list[Alert]:
        refused = {
            self.request_at[o]: e for o, e in self.refused_at.items() if o in self.request_at
        }
        return assemble(self.drift_events, self.requests, self.results, self.updates, refused)

    def unreadable_lines(self, prefix: Callable[[str], str] = str) -> list[str]:
        return [
            f"{n} record{'s' if n > 1 else ''} on {prefix(t)} could not be read"
            for t, n in sorted(self.unreadable.items())
        ]


class Tail:
    """What ``--follow`` has printed: new alerts to print whole, and printed ones whose
    retrain moved on (a new request or result) to print as an update."""

    def __init__(self) -> None:
        self.printed: dict[str, tuple[int, int, str]] = {}

    def changes(self, alerts: Iterable[Alert]) -> list[tuple[Alert, bool]]:
        """``(alert, is_update)`` for each alert to print now, in order."""
        out = []
        for alert in alerts:
            seen = (len(alert.requests), len(alert.results), alert.status)
            before = self.printed.get(alert.event.event_id)
            if before != seen:
                out.append((alert, before is not None))
                self.printed[alert.event.event_id] = seen
        return out


class AlertReader:
    """One consumer over the five topics from their beginning, outside any group and committing
    nothing: every run reads them whole. Built lazily by :meth:`open` (no I/O in ``__init__``)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.records = Records()
        self.missing: list[str] = []  # declared topics the broker does not have
        self._consumer: Consumer | None = None
        self._names: dict[str, str] = {}  # real topic name -> declared name
        self._ends: dict[tuple[str, int], int] = {}  # end offsets when the read began

    def open(self, timeout_s: float = 10.0) -> int:
        """Assign every partition from its beginning; return how many records exist now."""
        consumer = Consumer(
            {
                **self.kafka.confluent(),
                # never joins (partitions are assigned); read-: the readers' prefix of the ACLs
                "group.id": f"read-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        self._consumer = consumer
        metadata = consumer.list_topics(timeout=timeout_s).topics
        assignment, total = [], 0
        for name in READ:
            real = self.kafka.topic(name)
            meta = metadata.get(real)
            if meta is None or meta.error is not None:
                self.missing.append(name)
                continue
            self._names[real] = name
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(real, p), timeout=timeout_s
                )
                assignment.append(TopicPartition(real, p, OFFSET_BEGINNING))
                if high > low:
                    self._ends[(real, p)] = high
                    total += high - low
        consumer.assign(assignment)
        return total

    @property
    def caught_up(self) -> bool:
        return not self._ends

    def poll(self, timeout_s: float) -> int:
        """Read what has arrived (waiting up to ``timeout_s`` for it); return how many."""
        if self._consumer is None:
            raise LoanStreamError("AlertReader.poll before open")
        messages = self._consumer.consume(10_000, timeout_s)
        for msg in messages:
            self._take(msg)
        return len(messages)

    def _take(self, msg: Message) -> None:
        if msg.error() is not None:
            return
        real, partition, offset = str(msg.topic()), msg.partition() or 0, msg.offset() or 0
        end = self._ends.get((real, partition))
        if end is not None and offset + 1 >= end:
            del self._ends[(real, partition)]
        requests = self.kafka.topic(RETRAIN_REQUESTS)
        self.records.add(self._names[real], msg.value(), offset, requests)

    def read_to_end(self, deadline_s: float, on_progress: Callable[[int], None]) -> None:
        """Read until every partition reached the end it had when the read began."""
        deadline, read = time.monotonic() + deadline_s, 0
        while not self.caught_up:
            if time.monotonic() > deadline:
                raise LoanStreamError(f"reading the alert topics did not finish in {deadline_s} s")
            read += self.poll(0.5)
            on_progress(read)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


SignalOpt = Annotated[
    list[DriftSignal] | None,
    typer.Option("--signal", help="only these signals (repeatable): concept, data, ..."),
]


def alerts(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep reading; print new alerts and updates")
    ] = False,
    since: Annotated[
        str | None, typer.Option("--since", help="detected within 7d, 12h, 30m, or an ISO time")
    ] = None,
    signal: SignalOpt = None,
    json_lines: Annotated[
        bool, typer.Option("--json", help="one JSON object a line (keys: see loop.alerts)")
    ] = False,
    model: Annotated[str | None, typer.Option("--model", help="only this model name")] = None,
    bootstrap_servers: Annotated[
        str | None,
        typer.Option("--bootstrap-servers", "-b", help="[LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS]"),
    ] = None,
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", help="give up reading the topics after this")
    ] = 120.0,
) -> None:
    """Each drift alert as a person reads it: what moved and by how much against its threshold,
    since when, which model version, which retrain it asked for and how that ended.

    Examples:

    \b
      loanstream alerts --since 7d --signal concept
      loanstream alerts --follow --json
    """
    from rich.console import Console

    err = Console(stderr=True, soft_wrap=True)
    start = None if since is None else parse_since(since, datetime.now(UTC))
    kafka = kafka_settings(bootstrap_servers)
    reader = AlertReader(kafka)
    show = Shown(json_lines, start, tuple(signal or ()), model)
    stop = threading.Event()
    try:
        _read_existing(reader, timeout_s, err)
        for line in reader.records.unreadable_lines(kafka.topic):
            err.print(line, markup=False)
        show.all(reader.records.alerts())
        # Ctrl-C or SIGTERM ends a --follow between two polls (half a second at most): the
        # consumer is closed from here, not from an exception inside librdkafka's consume.
        for sig in (signals.SIGINT, signals.SIGTERM):
            signals.signal(sig, lambda *_: stop.set())
        while follow and not stop.is_set():
            if reader.poll(0.5):
                show.all(reader.records.alerts())
                show.unreadable(reader.records, kafka, err)
    except KeyboardInterrupt:  # Ctrl-C while the topics are read
        pass
    except LoanStreamError as error:
        err.print(f"[red]{error}[/]")
        raise typer.Exit(1) from None
    finally:
        reader.close()


def _read_existing(reader: AlertReader, timeout_s: float, err: Any) -> None:
    """Read the topics to their current end, with a progress bar on stderr after a second."""
    from confluent_kafka import KafkaException

    from loanstream.progress import progress_bar

    try:
        total = reader.open()
    except KafkaException as error:
        raise LoanStreamError(f"cannot reach Kafka: {error.args[0].str()}") from None
    if reader.missing:
        names = ", ".join(reader.kafka.topic(n) for n in reader.missing)
        err.print(f"not on the broker (yet): {names}", markup=False)
    began, bar = time.monotonic(), None

    def progress(read: int) -> None:
        nonlocal bar
        if bar is None and time.monotonic() - began > 1.0:
            bar = progress_bar(err)
            bar.start()
            bar.add_task("reading the alert topics", total=total)
        if bar is not None:
            bar.update(bar.task_ids[0], completed=read)

    try:
        reader.read_to_end(timeout_s, progress)
    finally:
        if bar is not None:
            bar.stop()


class Shown:
    """Prints alerts as chosen (human blocks or JSON lines), each once, then their updates."""

    def __init__(
        self,
        json_lines: bool,
        since: datetime | None,
        signals: tuple[DriftSignal, ...],
        model: str | None,
    ) -> None:
        self.json_lines, self.since, self.signals, self.model = json_lines, since, signals, model
        self.tail = Tail()
        self.reported: dict[str, int] = {}

    def all(self, alerts: list[Alert]) -> None:
        for alert, is_update in self.tail.changes(
            select(alerts, self.since, self.signals, self.model)
        ):
            if self.json_lines:
                text = orjson.dumps(as_json(alert, is_update)).decode()
            else:
                text = update_line(alert) if is_update else tell(alert) + "\n"
            sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def unreadable(self, records: Records, kafka: KafkaSettings, err: Any) -> None:
        """Say on stderr when more records could not be read since last said."""
        if records.unreadable != self.reported:
            self.reported = dict(records.unreadable)
            for line in records.unreadable_lines(kafka.topic):
                err.print(line, markup=False)
