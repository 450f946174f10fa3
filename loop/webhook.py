"""A webhook sink: POSTs messages to one URL from sender threads, retrying failures on a
schedule, so that a message whose POST fails never holds back the ones behind it.

``submit`` puts a :class:`Notice` in a bounded in-memory queue and waits while it is full
(backpressure: nothing is dropped). A sender thread POSTs it; a connection error, a timeout or
an answer other than 2xx is tried again after ``backoff_s``, doubling up to ``backoff_max_s``,
at most ``retries`` times. The retry waits in a schedule, not in the sender: other messages are
sent meanwhile. Each notice ends exactly once, delivered or not, in ``on_done`` (called from a
sender thread), which the caller uses to commit offsets or to dead-letter.

With a secret, each request carries ``X-LoanStream-Timestamp`` (Unix seconds) and
``X-LoanStream-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + body>``, so a receiver can
tell our messages from anyone's, and, as the timestamp is signed too, refuse an old one replayed
(:func:`signature`). The URL is never logged whole: its path, query and
user info can hold a token (a Slack webhook's path is its secret), see :func:`redact_url`.

>>> body = render(Notice("drift", "PSI of income 0.31", {"a": 1}, None), "json")
>>> body
b'{"kind":"drift","text":"PSI of income 0.31","record":{"a":1}}'
>>> signature(body, "s3cret", 1700000000)[:20]
'sha256=36d688809e8ad'
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

logger = logging.getLogger(__name__)

Format = Literal["slack", "json"]


@dataclass(frozen=True)
class Notice:
    """One message to send: its kind (a low-cardinality label), a sentence for people, the
    record it tells of (the contract's JSON), and ``ref``, the caller's handle (a Kafka
    message), given back in ``on_done``."""

    kind: str
    text: str
    record: Mapping[str, Any]
    ref: Any


@dataclass(frozen=True)
class Outcome:
    """How a notice ended: delivered, or given up after ``attempts`` with the last error."""

    delivered: bool
    attempts: int
    error: str | None = None


@dataclass(frozen=True)
class WebhookTarget:
    """Where and how to POST: the URL (a secret in itself), the HMAC secret, the format."""

    url: str = field(repr=False)
    secret: str | None = field(default=None, repr=False)
    format: Format = "slack"
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Backoff:
    """``retries`` more attempts after the first, ``first_s`` apart, doubling up to ``max_s``.

    >>> [Backoff(retries=5, first_s=1.0, max_s=5.0).delay(n) for n in range(1, 6)]
    [1.0, 2.0, 4.0, 5.0, 5.0]
    """

    retries: int = 5
    first_s: float = 1.0
    max_s: float = 60.0

    def delay(self, failed_attempts: int) -> float:
        """The wait before the next attempt, after ``failed_attempts`` failed ones."""
        return float(min(self.max_s, self.first_s * 2 ** (failed_attempts - 1)))


class WebhookMetrics:
    """Prometheus metrics of the notifier, built against an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "loanstream_notifier_sent_total",
            "Messages the webhook accepted (2xx), by kind",
            ["kind"],
            registry=registry,
        )
        self.retried = Counter(
            "loanstream_notifier_retried_total",
            "Failed POSTs that were scheduled again, by kind",
            ["kind"],
            registry=registry,
        )
        self.failed = Counter(
            "loanstream_notifier_failed_total",
            "Messages given up after the last retry (dead-lettered), by kind",
            ["kind"],
            registry=registry,
        )
        self.skipped = Counter(
            "loanstream_notifier_skipped_total",
            "Records read but not sent, by source topic and reason (invalid, stale, waiting, ...)",
            ["source", "reason"],
            registry=registry,
        )
        self.outstanding = Gauge(
            "loanstream_notifier_outstanding",
            "Messages queued or waiting for a retry",
            registry=registry,
        )


def render(notice: Notice, format: Format) -> bytes:
    """The request body: Slack's ``{"text": ...}``, or ``{"kind", "text", "record"}``."""
    if format == "slack":
        return orjson.dumps({"text": notice.text})
    return orjson.dumps({"kind": notice.kind, "text": notice.text, "record": notice.record})


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>." + body under secret>``: the
    X-LoanStream-Signature header (the X-LoanStream-Timestamp header gives ``timestamp``)."""
    signed = b"%d." % timestamp + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def headers(body: bytes, secret: str | None, now: float) -> dict[str, str]:
    out = {"Content-Type": "application/json", "User-Agent": "loanstream-notifier"}
    if secret:
        out["X-LoanStream-Timestamp"] = str(int(now))
        out["X-LoanStream-Signature"] = signature(body, secret, int(now))
    return out


def redact_url(url: str) -> str:
    """The URL as logs may show it: scheme, host and port only.

    >>> redact_url("https://user:pw@hooks.example.com:8443/services/T0/B0/XyZ?token=abc")
    'https://hooks.example.com:8443/...'
    """
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/..."


def post(client: httpx.Client, target: WebhookTarget, body: bytes) -> str | None:
    """POST ``body``; None if the webhook answered 2xx, else why not (without the URL)."""
    try:
        response = client.post(
            target.url, content=body, headers=headers(body, target.secret, time.time())
        )
    except httpx.TimeoutException:
        return f"no answer within {target.timeout_s:g} s"
    except httpx.HTTPError as err:
        return f"{type(err).__name__}"  # its text names the URL
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


@dataclass
class _Pending:
    notice: Notice
    body: bytes
    attempts: int = 0


class WebhookSink:
    """Send notices to a webhook from ``senders`` threads; see the module's docstring.

    Example::

        sink = WebhookSink(WebhookTarget("https://hooks.example.com/x"), Backoff(), 1000,
                           WebhookMetrics(CollectorRegistry()), on_done=print)
        sink.start()
        sink.submit(Notice("drift", "PSI of income 0.31", {}, None))
        sink.close(timeout_s=10)
    """

    def __init__(
        self,
        target: WebhookTarget,
        backoff: Backoff,
        queue_size: int,
        metrics: WebhookMetrics,
        on_done: Callable[[Notice, Outcome], None],
        senders: int = 1,
    ) -> None:
        self.target = target
        self.backoff = backoff
        self.queue_size = queue_size
        self.metrics = metrics
        self.on_done = on_done
        self.senders = senders
        self._ready: deque[_Pending] = deque()  # to send now, in arrival order
        self._later: list[tuple[float, int, _Pending]] = []  # retries: (due, seq, pending)
        self._seq = itertools.count()
        self._outstanding = 0  # submitted and not yet done: what the queue bound counts
        self._cond = threading.Condition()
        self._closing = False
        self._threads: list[threading.Thread] = []

    @property
    def outstanding(self) -> int:
        with self._cond:
            return self._outstanding

    def start(self) -> None:
        for n in range(self.senders):
            thread = threading.Thread(target=self._run, name=f"webhook-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, notice: Notice, timeout_s: float | None = None) -> bool:
        """Queue ``notice``, waiting while ``queue_size`` notices are outstanding; False if
        ``timeout_s`` passed first (the notice was not queued)."""
        body = render(notice, self.target.format)
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._outstanding < self.queue_size or self._closing, timeout_s
            ):
                return False
            self._outstanding += 1
            self._ready.append(_Pending(notice, body))
            self.metrics.outstanding.set(self._outstanding)
            self._cond.notify_all()
        return True

    def drain(self, timeout_s: float) -> bool:
        """Wait until every submitted notice is done; False if ``timeout_s`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._outstanding == 0, timeout_s)

    def close(self, timeout_s: float = 0.0) -> int:
        """Wait up to ``timeout_s`` for what is outstanding, then stop the senders; returns how
        many notices were left undone (their ``on_done`` is never called)."""
        self.drain(timeout_s)
        with self._cond:
            self._closing = True
            left = self._outstanding
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(self.target.timeout_s + 1)
        return left

    def _next(self) -> _Pending | None:
        """The next notice to POST: a due retry first, else the oldest new one; None when
        closing. Waits until one is due."""
        with self._cond:
            while not self._closing:
                now = time.monotonic()
                if self._later and self._later[0][0] <= now:
                    return heapq.heappop(self._later)[2]
                if self._ready:
                    return self._ready.popleft()
                wait = self._later[0][0] - now if self._later else None
                self._cond.wait(wait)
            return None

    def _run(self) -> None:
        with httpx.Client(timeout=self.target.timeout_s, follow_redirects=False) as client:
            while (pending := self._next()) is not None:
                pending.attempts += 1
                try:
                    error = post(client, self.target, pending.body)
                except Exception as err:  # a bug must not end the sender: the notice fails
                    logger.exception("webhook POST failed unexpectedly")
                    error = type(err).__name__
                self._after(pending, error)

    def _after(self, pending: _Pending, error: str | None) -> None:
        kind = pending.notice.kind
        if error is not None and pending.attempts <= self.backoff.retries:
            delay = self.backoff.delay(pending.attempts)
            logger.warning(
                "webhook %s: %s message failed (%s), attempt %d of %d; again in %.1f s",
                redact_url(self.target.url),
                kind,
                error,
                pending.attempts,
                self.backoff.retries + 1,
                delay,
            )
            self.metrics.retried.labels(kind).inc()
            with self._cond:
                due = time.monotonic() + delay
                heapq.heappush(self._later, (due, next(self._seq), pending))
                self._cond.notify_all()
            return
        if error is None:
            self.metrics.sent.labels(kind).inc()
        else:
            self.metrics.failed.labels(kind).inc()
            logger.error(
                "webhook %s: %s message given up after %d attempts: %s",
                redact_url(self.target.url),
                kind,
                pending.attempts,
                error,
            )
        try:
            self.on_done(pending.notice, Outcome(error is None, pending.attempts, error))
        except Exception:  # the caller's bug: the notice is still done, the sender goes on
            logger.exception("on_done failed for a %s message", kind)
        with self._cond:
            self._outstanding -= 1
            self.metrics.outstanding.set(self._outstanding)
            self._cond.notify_all()
