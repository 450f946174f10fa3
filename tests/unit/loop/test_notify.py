"""The webhook sink against a real local HTTP receiver, and the notifier's pure parts."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from loanstream.cli import get_app
from loanstream.config import KafkaSettings
from loanstream.contracts import DriftEvent, ModelUpdate, RetrainOutcome, RetrainResult
from loanstream.errors import LoanStreamError
from loanstream.kafka.broker import free_port
from loop.notify import (
    DEFAULT_KINDS,
    Kind,
    Notifier,
    NotifySettings,
    OffsetTracker,
    notifier_configured,
)
from loop.telling import drift_sentence, result_sentence, update_sentence
from loop.up import default_services, local_services
from loop.webhook import (
    Backoff,
    Notice,
    Outcome,
    WebhookMetrics,
    WebhookSink,
    WebhookTarget,
    redact_url,
)


@dataclass
class Received:
    at: float
    body: bytes
    headers: dict[str, str]


@dataclass
class Receiver:
    """A real HTTP server in a thread; ``answer(body)`` gives each request's status."""

    answer: Callable[[bytes], int] = lambda body: 200
    requests: list[Received] = field(default_factory=list)
    gate: threading.Event | None = None  # set: answer; unset: hold the request

    def start(self) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(Received(time.monotonic(), body, dict(self.headers)))
                if receiver.gate is not None:
                    receiver.gate.wait(10)
                self.send_response(receiver.answer(body))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=t0p"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    if r.gate is not None:
        r.gate.set()
    r.stop()


@dataclass
class Sink:
    sink: WebhookSink
    done: list[tuple[Notice, Outcome, float]]
    metrics: WebhookMetrics
    registry: CollectorRegistry

    def count(self, name: str, kind: str) -> float:
        value = self.registry.get_sample_value(f"loanstream_notifier_{name}_total", {"kind": kind})
        return value or 0.0


def make_sink(target: WebhookTarget, backoff: Backoff, queue_size: int = 100) -> Sink:
    registry = CollectorRegistry()
    metrics = WebhookMetrics(registry)
    done: list[tuple[Notice, Outcome, float]] = []
    sink = WebhookSink(
        target, backoff, queue_size, metrics, lambda n, o: done.append((n, o, time.monotonic()))
    )
    sink.start()
    return Sink(sink, done, metrics, registry)


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def notice(text: str, kind: str = "drift") -> Notice:
    return Notice(kind, text, {"event_id": text}, ref=text)


def test_slack_and_json_bodies(receiver: Receiver) -> None:
    url = receiver.start()
    for fmt in ("slack", "json"):
        s = make_sink(WebhookTarget(url, format=fmt), Backoff(retries=0))
        s.sink.submit(notice("PSI of income rose to 0.31", kind="promoted"))
        assert s.sink.drain(10)
        s.sink.close()
    bodies = [orjson.loads(r.body) for r in receiver.requests]
    assert bodies == [
        {"text": "PSI of income rose to 0.31"},
        {
            "kind": "promoted",
            "text": "PSI of income rose to 0.31",
            "record": {"event_id": "PSI of income rose to 0.31"},
        },
    ]
    assert all(r.headers["Content-Type"] == "application/json" for r in receiver.requests)
    assert all("X-LoanStream-Signature" not in r.headers for r in receiver.requests)


def test_a_secret_signs_each_body_verifiably(receiver: Receiver) -> None:
    url = receiver.start()
    s = make_sink(WebhookTarget(url, secret="sh4red", format="json"), Backoff(retries=0))
    for text in ("one", "two"):
        s.sink.submit(notice(text))
    assert s.sink.drain(10)
    s.sink.close()
    assert len(receiver.requests) == 2
    for r in receiver.requests:
        stamp = r.headers["X-LoanStream-Timestamp"]
        signed = stamp.encode() + b"." + r.body  # the timestamp is signed: no replay later
        expected = hmac.new(b"sh4red", signed, hashlib.sha256).hexdigest()
        assert r.headers["X-LoanStream-Signature"] == f"sha256={expected}"
        assert abs(int(stamp) - time.time()) < 30
        forged = hmac.new(b"other", signed, hashlib.sha256).hexdigest()
        assert r.headers["X-LoanStream-Signature"] != f"sha256={forged}"
        unstamped = hmac.new(b"sh4red", r.body, hashlib.sha256).hexdigest()
        assert r.headers["X-LoanStream-Signature"] != f"sha256={unstamped}"


def test_a_failing_message_is_retried_with_backoff_then_given_up(receiver: Receiver) -> None:
    receiver.answer = lambda body: 500
    url = receiver.start()
    s = make_sink(WebhookTarget(url), Backoff(retries=3, first_s=0.05, max_s=0.1))
    began = time.monotonic()
    s.sink.submit(notice("bad"))
    assert s.sink.drain(10)
    s.sink.close()
    [(_, outcome, _)] = s.done
    assert outcome == Outcome(delivered=False, attempts=4, error="HTTP 500")
    times = [r.at for r in receiver.requests]
    assert len(times) == 4
    gaps = [b - a for a, b in zip([began, *times], times, strict=False)][1:]
    for gap, delay in zip(gaps, (0.05, 0.1, 0.1), strict=True):  # doubled, then capped
        assert gap >= delay * 0.95
    assert (s.count("retried", "drift"), s.count("failed", "drift")) == (3, 1)
    assert s.count("sent", "drift") == 0


def test_a_refused_connection_fails_without_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/secret-path?token=abc"
    s = make_sink(WebhookTarget(url, timeout_s=2), Backoff(retries=1, first_s=0.01))
    s.sink.submit(notice("x"))
    assert s.sink.drain(10)
    s.sink.close()
    [(_, outcome, _)] = s.done
    assert not outcome.delivered and outcome.attempts == 2
    assert outcome.error == "ConnectError"
    assert redact_url(url) == f"{url.split('/secret')[0]}/..."


def test_a_failing_message_does_not_hold_back_the_next(receiver: Receiver) -> None:
    receiver.answer = lambda body: 500 if b"bad" in body else 200
    url = receiver.start()
    s = make_sink(WebhookTarget(url, format="json"), Backoff(retries=3, first_s=0.3, max_s=5))
    s.sink.submit(notice("bad"))
    s.sink.submit(notice("good"))
    assert s.sink.drain(10)
    s.sink.close()
    texts = [orjson.loads(r.body)["text"] for r in receiver.requests]
    assert texts == ["bad", "good", "bad", "bad", "bad"]
    bad = [r.at for r in receiver.requests if b"bad" in r.body]
    good = next(r.at for r in receiver.requests if b"good" in r.body)
    assert good < bad[1]  # sent while the bad one waited for its first retry
    assert good - bad[0] < 0.3
    assert bad[-1] - bad[0] >= (0.3 + 0.6 + 1.2) * 0.95
    outcomes = {n.text: o for n, o, _ in s.done}
    assert outcomes == {
        "good": Outcome(True, 1),
        "bad": Outcome(False, 4, "HTTP 500"),
    }
    assert [n.text for n, _, _ in s.done] == ["good", "bad"]


def test_a_full_queue_makes_the_caller_wait_and_drops_nothing(receiver: Receiver) -> None:
    receiver.gate = threading.Event()  # the webhook holds every request until the gate opens
    url = receiver.start()
    s = make_sink(WebhookTarget(url, format="json"), Backoff(retries=0), queue_size=2)
    assert s.sink.submit(notice("m0")) and s.sink.submit(notice("m1"))
    assert not s.sink.submit(notice("m2"), timeout_s=0.2)  # full: not queued
    assert s.sink.outstanding == 2
    waited: list[float] = []

    def blocked_submit() -> None:
        began = time.monotonic()
        s.sink.submit(notice("m2"))
        waited.append(time.monotonic() - began)

    waiter = threading.Thread(target=blocked_submit)
    waiter.start()
    time.sleep(0.3)
    assert not waited  # still waiting for room
    receiver.gate.set()
    waiter.join(10)
    assert waited and waited[0] >= 0.25
    assert s.sink.drain(10)
    s.sink.close()
    texts = [orjson.loads(r.body)["text"] for r in receiver.requests]
    assert texts == ["m0", "m1", "m2"]
    assert all(o.delivered for _, o, _ in s.done)


def test_settings_refuse_to_run_without_a_url_and_keep_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LOANSTREAM_NOTIFY_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("LOANSTREAM_NOTIFY_WEBHOOK_SECRET", "")
    settings = NotifySettings()
    assert settings.webhook_url is None and settings.webhook_secret is None
    with pytest.raises(LoanStreamError, match="LOANSTREAM_NOTIFY_WEBHOOK_URL"):
        settings.target()
    assert not notifier_configured()
    result = CliRunner().invoke(get_app(), ["notify", "--metrics-port", "0"])
    assert isinstance(result.exception, LoanStreamError)
    assert "LOANSTREAM_NOTIFY_WEBHOOK_URL" in str(result.exception)

    monkeypatch.setenv("LOANSTREAM_NOTIFY_WEBHOOK_URL", "https://hooks.example.com/T/B/s3cr3t")
    monkeypatch.setenv("LOANSTREAM_NOTIFY_WEBHOOK_SECRET", "k3y")
    monkeypatch.setenv("LOANSTREAM_NOTIFY_KINDS", "drift, model_update")
    settings = NotifySettings()
    assert "s3cr3t" not in repr(settings) and "k3y" not in repr(settings)
    assert settings.kinds == {Kind.DRIFT, Kind.MODEL_UPDATE}
    assert settings.topics() == ["loan.drift-events", "loan.model-updates"]
    assert settings.target() == WebhookTarget(
        "https://hooks.example.com/T/B/s3cr3t", "k3y", "slack", 10.0
    )
    assert notifier_configured()
    assert default_services() == "scorer,monitor,trainer,notifier"
    assert local_services()["notifier"].argv == ["notify", "--metrics-port", "8004"]

    monkeypatch.setenv("LOANSTREAM_NOTIFY_WEBHOOK_URL", "ftp://example.com/s3cr3t")
    with pytest.raises(ValueError, match="http:// or https://"):
        NotifySettings()
    with pytest.raises(LoanStreamError, match="http:// or https://") as refused:
        notifier_configured()
    assert "s3cr3t" not in str(refused.value)
    monkeypatch.setenv("LOANSTREAM_NOTIFY_WEBHOOK_URL", "https://x.example/")
    monkeypatch.setenv("LOANSTREAM_NOTIFY_KINDS", "drift,waiting")
    with pytest.raises(ValueError, match="kinds"):
        NotifySettings()


def test_by_default_every_result_but_waiting_and_no_model_updates() -> None:
    settings = NotifySettings(webhook_url="http://127.0.0.1:9/x")
    assert settings.kinds == DEFAULT_KINDS
    assert Kind.MODEL_UPDATE not in settings.kinds
    assert settings.topics() == ["loan.drift-events", "loan.retrain-results"]


@dataclass
class FakeMessage:
    """What the notifier reads of a confluent-kafka Message."""

    _topic: str
    _value: bytes
    _offset: int = 0

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._value


NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def drift(detected_at: datetime = NOW) -> DriftEvent:
    return DriftEvent(
        event_id="d-1",
        signal="data",
        detector="psi",
        feature="income",
        statistic=0.31,
        threshold=0.25,
        window_size=2000,
        first_position=1000,
        confirmed_position=1500,
        first_event_time=NOW - timedelta(days=3),
        confirmed_event_time=NOW - timedelta(days=2),
        model_name="loan-repayment",
        model_version="1",
        detected_at=detected_at,
    )


def result(outcome: RetrainOutcome) -> RetrainResult:
    return RetrainResult(
        model_name="loan-repayment",
        outcome=outcome,
        reason="challenger AUC 0.80 below the champion's 0.83",
        challenger_version="2",
        champion_version="1",
        finished_at=NOW,
    )


def test_the_notifier_tells_each_record_and_skips_what_it_should_not_send() -> None:
    registry = CollectorRegistry()
    notifier = Notifier(
        KafkaSettings(topic_prefix="p."),
        NotifySettings(webhook_url="http://127.0.0.1:9/x", max_age_s=3600),
        WebhookMetrics(registry),
        clock=lambda: NOW,
    )
    event = drift()
    message = FakeMessage("p.loan.drift-events", event.to_json())
    told = notifier.notice(message)  # type: ignore[arg-type]
    assert told is not None and told.ref is message
    assert (told.kind, told.text) == ("drift", drift_sentence(event))
    assert told.record == orjson.loads(event.to_json())

    kept = result(RetrainOutcome.KEPT_CHAMPION)
    told = notifier.notice(FakeMessage("p.loan.retrain-results", kept.to_json()))  # type: ignore[arg-type]
    assert told is not None and (told.kind, told.text) == ("kept_champion", result_sentence(kept))

    skipped = [
        FakeMessage("p.loan.retrain-results", result(RetrainOutcome.WAITING).to_json()),
        FakeMessage("p.loan.drift-events", b"{not json"),
        FakeMessage("p.loan.drift-events", result(RetrainOutcome.PROMOTED).to_json()),
        FakeMessage("p.loan.drift-events", drift(NOW - timedelta(hours=2)).to_json()),
    ]
    assert [notifier.notice(m) for m in skipped] == [None] * 4  # type: ignore[arg-type]

    def skips(source: str, reason: str) -> float:
        labels = {"source": source, "reason": reason}
        return registry.get_sample_value("loanstream_notifier_skipped_total", labels) or 0.0

    assert skips("loan.retrain-results", "waiting") == 1
    assert skips("loan.drift-events", "invalid") == 2
    assert skips("loan.drift-events", "stale") == 1


def test_model_updates_are_told_when_asked_for() -> None:
    notifier = Notifier(
        KafkaSettings(),
        NotifySettings(webhook_url="http://127.0.0.1:9/x", kinds="model_update", max_age_s=None),
        WebhookMetrics(CollectorRegistry()),
    )
    update = ModelUpdate(
        model_name="loan-repayment",
        version="3",
        run_id="r",
        model_uri="models:/loan-repayment/3",
        sha256="0" * 64,
        promoted_at=NOW - timedelta(days=30),  # no age limit: sent however old
    )
    told = notifier.notice(FakeMessage("loan.model-updates", update.to_json()))  # type: ignore[arg-type]
    assert told is not None
    assert (told.kind, told.text) == ("model_update", update_sentence(update))


def test_the_offset_tracker_commits_only_a_done_prefix_per_partition() -> None:
    t = OffsetTracker()
    for partition in (("a", 0), ("a", 1)):
        for offset in (10, 11, 12):
            t.add(partition, offset, (partition[1], offset))
    assert t.done(("a", 0), 12) is None
    assert t.done(("a", 1), 10) == (1, 10)
    assert t.done(("a", 0), 10) == (0, 10)
    assert t.done(("a", 0), 11) == (0, 12)
    assert t.done(("a", 0), 11) is None  # done twice (read again): nothing more
    assert t.done(("b", 0), 1) is None  # never added
    assert t.open == 2
