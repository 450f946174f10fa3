"""What a hostile or eager client cannot do to the REST API: match the key without knowing it,
make the scorer hold a huge body, or pile scorings onto the event loop."""

from __future__ import annotations

import asyncio
import hmac
import random
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

import scorer.api
from loanstream.models import LoadedModel
from loanstream.spec import load_spec
from loanstream.validation import ApplicationValidator
from scorer.api import build_api
from scorer.holder import ModelHolder
from scorer.limits import ScorerBusy, ScoringSlots
from scorer.metrics import ScorerMetrics
from scorer.settings import ScorerSettings
from tests.helpers import application_json

SPEC = load_spec()
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    from tests.scorer_model import small_model

    return small_model()


def api_of(model: LoadedModel, **settings: Any) -> tuple[FastAPI, ScorerMetrics]:
    holder = ModelHolder()
    holder.offer(model)
    metrics = ScorerMetrics(CollectorRegistry())
    return build_api(
        ScorerSettings(**settings), holder, metrics, ApplicationValidator(SPEC)
    ), metrics


def rejected(metrics: ScorerMetrics, reason: str) -> float | None:
    return metrics.registry.get_sample_value(
        "loanstream_scorer_rest_rejected_total", {"reason": reason}
    )


def application(i: int) -> bytes:
    return application_json(SPEC, i, random.Random(i))


class Sender:
    """A chunked request body that counts what the server pulled from it."""

    def __init__(self, total: int, chunk: int = CHUNK, content: bytes | None = None) -> None:
        self.content = content if content is not None else b" " * total
        self.chunk = chunk
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.content), self.chunk):
            piece = self.content[start : start + self.chunk]
            self.sent += len(piece)
            yield piece


def post(api: FastAPI, body: Sender, headers: dict[str, str] | None = None) -> httpx.Response:
    """POST /v1/score through the ASGI transport, which hands the body over chunk by chunk."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer") as client:
            return await client.post("/v1/score", content=body.__aiter__(), headers=headers)

    return asyncio.run(go())


# --- the key ---------------------------------------------------------------------------------


def test_only_the_exact_key_passes(model: LoadedModel) -> None:
    api, metrics = api_of(model, api_key=SecretStr("s3cret"))
    c = TestClient(api)
    body = application(1)
    for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "s3cre"}, {"X-API-Key": "s3cret2"}):
        refused = c.post("/v1/score", content=body, headers=headers)
        assert (refused.status_code, refused.json()["reason"]) == (401, "unauthorized"), headers
    # A non-ASCII value is compared, not a server error (str compare_digest raises on it).
    assert c.post(
        "/v1/score", content=body, headers={"X-API-Key": b"s\xc3\xa9cret"}
    ).status_code == (401)
    assert rejected(metrics, "unauthorized") == 5
    assert c.post("/v1/score", content=body, headers={"X-API-Key": "s3cret"}).status_code == 200


def test_the_key_is_compared_in_constant_time_as_bytes(
    model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, Any]] = []
    compare = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(scorer.api.hmac, "compare_digest", spy)
    c = TestClient(api_of(model, api_key=SecretStr("s3cret"))[0])
    c.post("/v1/score", content=application(1), headers={"X-API-Key": "guess"})
    c.post("/v1/score", content=application(1), headers={"X-API-Key": ""})
    assert calls == [(b"guess", b"s3cret")]  # the empty header is refused before comparing


# --- the body cap ----------------------------------------------------------------------------


def test_a_50_mb_chunked_body_is_refused_once_past_the_cap(model: LoadedModel) -> None:
    api, metrics = api_of(model)  # cap: 1 MiB
    body = Sender(50 * 1024 * 1024)
    response = post(api, body)
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    assert response.json() == {
        "reason": "oversize",
        "errors": [
            {"field": "body", "problem": "body must be at most 1048576 bytes, got at least 1114112"}
        ],
    }
    # Read until the 17th chunk of 64 KiB passed 1 MiB, then no more of the 50 MiB.
    assert body.sent == 17 * CHUNK
    assert rejected(metrics, "oversize") == 1


def test_a_content_length_over_the_cap_is_refused_before_reading(model: LoadedModel) -> None:
    api, _ = api_of(model, api_max_body_bytes=4096)
    body = Sender(5000)
    response = post(api, body, headers={"Content-Length": "5000"})
    assert response.status_code == 413
    assert response.json()["errors"][0]["problem"] == "body must be at most 4096 bytes, got 5000"
    assert body.sent == 0


def test_a_chunked_body_within_the_cap_is_scored(model: LoadedModel) -> None:
    api, _ = api_of(model, api_max_body_bytes=4096)
    body = Sender(0, chunk=100, content=application(7))
    response = post(api, body)
    assert response.status_code == 200, response.text
    assert response.json()["application_id"] == "app-0000007"
    assert body.sent == len(application(7))


# --- the concurrency limit -------------------------------------------------------------------


def blocking_scorer(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[threading.Event, threading.Event, list[int]]:
    """Make scoring wait for ``release`` (after setting ``entered``), noting its thread."""
    entered, release, threads = threading.Event(), threading.Event(), []
    real: Callable[..., Any] = scorer.api.score_batch

    def score_batch(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        entered.set()
        assert release.wait(10), "the test never released the scoring"
        return real(*args, **kwargs)

    monkeypatch.setattr(scorer.api, "score_batch", score_batch)
    return entered, release, threads


def test_a_full_scorer_answers_429_at_once_and_the_loop_stays_free(
    model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, metrics = api_of(model, api_max_concurrency=1)
    entered, release, threads = blocking_scorer(monkeypatch)

    async def scenario() -> tuple[int, httpx.Response, int, int, int]:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer") as client:
            first = asyncio.ensure_future(client.post("/v1/score", content=application(1)))
            assert await asyncio.to_thread(entered.wait, 10)
            # The first scoring holds the only slot, in a worker thread: the loop still answers.
            health = await asyncio.wait_for(client.get("/healthz"), 5)
            second = await asyncio.wait_for(client.post("/v1/score", content=application(2)), 5)
            release.set()
            done = await asyncio.wait_for(first, 10)
            third = await asyncio.wait_for(client.post("/v1/score", content=application(3)), 10)
            return (
                health.status_code,
                second,
                done.status_code,
                third.status_code,
                (threading.get_ident()),
            )

    health, second, first, third, loop_thread = asyncio.run(scenario())
    assert health == 200
    assert second.status_code == 429
    assert second.headers["retry-after"] == "1"
    assert second.json() == {
        "reason": "busy",
        "errors": [
            {
                "field": "request",
                "problem": "at most 1 scorings run at once, all 1 are running; retry after 1 s",
            }
        ],
    }
    assert (first, third) == (200, 200)  # the slot came back
    assert rejected(metrics, "busy") == 1
    assert len(threads) == 2 and loop_thread not in threads


def test_the_limit_admits_as_many_scorings_as_it_has_slots(
    model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, metrics = api_of(model, api_max_concurrency=3)
    _, release, threads = blocking_scorer(monkeypatch)

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer") as client:
            running = [
                asyncio.ensure_future(client.post("/v1/score", content=application(i)))
                for i in range(3)
            ]
            while len(threads) < 3:
                await asyncio.sleep(0.01)
            fourth = await asyncio.wait_for(client.post("/v1/score", content=application(4)), 5)
            release.set()
            return [fourth.status_code] + [(await r).status_code for r in running]

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == [429, 200, 200, 200]
    assert len(set(threads)) == 3  # three worker threads at once
    assert rejected(metrics, "busy") == 1


def test_a_slot_is_held_until_its_thread_ends_even_if_the_caller_gives_up() -> None:
    slots, release = ScoringSlots(1), threading.Event()

    async def scenario() -> list[object]:
        seen: list[object] = []
        task = asyncio.ensure_future(slots.run(lambda: release.wait(10)))
        while not slots.full:
            await asyncio.sleep(0.01)
        with pytest.raises(ScorerBusy, match="at most 1 scorings run at once, all 1 are running"):
            await slots.run(lambda: None)
        task.cancel()
        await asyncio.sleep(0.05)
        seen.append(slots.busy)  # cancelled, but its thread still works: the slot stays taken
        with pytest.raises(ScorerBusy):
            await slots.run(lambda: None)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        while slots.busy:  # given back once the thread's end reaches the loop
            await asyncio.sleep(0.01)
        seen.append(await slots.run(lambda: "free again"))
        return seen

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == [1, "free again"]
