"""REST scoring on the same core and the same hot-swapped model as the stream.

POST /v1/score takes one application, or ``{"applications": [...]}``, checked by the same
validator as the stream; a refused request answers 4xx naming each field. GET /v1/model,
/healthz (alive), /readyz (a model is loaded) and /metrics (Prometheus) complete it.

With a key set, /v1/* needs it in X-API-Key. A body past ``api_max_body_bytes`` gets 413, by its
Content-Length before it is read, or as soon as a chunked body passes the cap. Parsing,
validation and scoring run in worker threads, at most ``api_max_concurrency`` at once; a request
that finds them all busy gets 429 with Retry-After at once instead of waiting in a queue.

A challenger in shadow does not score REST requests: loan.shadow-predictions holds the stream's
applications only, the ones whose outcomes the monitor joins.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr

from loanstream.contracts import LoanApplication, Prediction
from loanstream.errors import InvalidRecord
from loanstream.validation import ApplicationValidator
from scorer.core import score_batch
from scorer.holder import ModelHolder
from scorer.limits import BodyTooLarge, ScorerBusy, ScoringSlots, read_capped
from scorer.metrics import ScorerMetrics
from scorer.settings import ScorerSettings

PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
RETRY_AFTER_S = 1  # a scoring takes milliseconds: a slot is likely free again by then


def _problem(
    status: int,
    reason: str,
    errors: list[dict[str, Any]],
    metrics: ScorerMetrics,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    metrics.rejected_requests.labels(reason).inc()
    return JSONResponse({"reason": reason, "errors": errors}, status_code=status, headers=headers)


def key_matches(given: str | None, key: SecretStr) -> bool:
    """Whether the X-API-Key header ``given`` is ``key``, in time that does not depend on how
    much of it is right; a missing or empty header never matches.

    Compared as bytes: any header value compares (Starlette decodes headers as latin-1), where
    comparing strings would raise on a non-ASCII one.

    >>> key = SecretStr("s3cret")
    >>> [key_matches(g, key) for g in ("s3cret", "s3cre", "s3cret ", "", None, "sécret")]
    [True, False, False, False, False, False]
    """
    if not given:
        return False
    return hmac.compare_digest(given.encode("latin-1"), key.get_secret_value().encode("ascii"))


def _busy(err: ScorerBusy, metrics: ScorerMetrics) -> JSONResponse:
    return _problem(
        429,
        "busy",
        [{"field": "request", "problem": f"{err}; retry after {RETRY_AFTER_S} s"}],
        metrics,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _answer(
    body: bytes,
    settings: ScorerSettings,
    holder: ModelHolder,
    metrics: ScorerMetrics,
    validator: ApplicationValidator,
) -> Response:
    """The response to a /v1/score body: predictions, or the problem; runs in a worker thread."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        return _problem(400, "malformed_json", [{"field": "body", "problem": str(err)}], metrics)
    single = not (isinstance(document, dict) and "applications" in document)
    items = [document] if single else document["applications"]
    if not isinstance(items, list) or not 1 <= len(items) <= settings.api_max_batch:
        return _problem(
            422,
            "invalid_batch",
            [
                {
                    "field": "applications",
                    "problem": f"must be a list of 1 to {settings.api_max_batch} applications",
                }
            ],
            metrics,
        )
    apps: list[LoanApplication] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise InvalidRecord(
                    [f"application must be a JSON object, got {type(item).__name__}"],
                    "wrong_type",
                )
            apps.append(validator.validate(item))
        except InvalidRecord as err:
            errors.append({"index": index, "reason": err.reason, "problems": err.problems})
    if errors:
        return _problem(422, errors[0]["reason"], errors, metrics)
    taken = holder.take()  # the challenger does not score REST requests: no shadow here
    model, typical = taken.model, taken.typical
    if model is None:
        return _problem(
            503, "no_model", [{"field": "model", "problem": "no model loaded"}], metrics
        )
    now = datetime.now(UTC)
    predictions = score_batch(model, apps, now, now, settings.reasons, typical, validator.spec)
    for p in predictions:
        metrics.scored.labels(p.decision.value, p.model_version, "rest").inc()
    if single:
        return Response(predictions[0].to_json(), media_type="application/json")
    payload = b'{"predictions":[' + b",".join(p.to_json() for p in predictions) + b"]}"
    return Response(payload, media_type="application/json")


def build_api(
    settings: ScorerSettings,
    holder: ModelHolder,
    metrics: ScorerMetrics,
    validator: ApplicationValidator,
) -> FastAPI:
    api = FastAPI(
        title="LoanStream scorer",
        version="1",
        description="Probability of on-time repayment and a decision, per application.",
    )
    application_schema = validator.model.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    definitions = application_schema.pop("$defs", {})
    body_schema = {
        "oneOf": [
            {"$ref": "#/components/schemas/LoanApplication"},
            {
                "type": "object",
                "required": ["applications"],
                "additionalProperties": False,
                "properties": {
                    "applications": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": settings.api_max_batch,
                        "items": {"$ref": "#/components/schemas/LoanApplication"},
                    }
                },
            },
        ]
    }

    slots = ScoringSlots(settings.api_max_concurrency)

    @api.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        key = settings.api_key
        if (
            request.url.path not in PUBLIC
            and key is not None
            and not key_matches(request.headers.get("x-api-key"), key)
        ):
            return _problem(
                401,
                "unauthorized",
                [{"field": "X-API-Key", "problem": "missing or wrong API key"}],
                metrics,
            )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.api_max_body_bytes:
            return _problem(
                413,
                "oversize",
                [
                    {
                        "field": "body",
                        "problem": f"body must be at most {settings.api_max_body_bytes} bytes, "
                        f"got {length}",
                    }
                ],
                metrics,
                headers={"Connection": "close"},
            )
        response: Response = await call_next(request)
        return response

    @api.post(
        "/v1/score",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            }
        },
        responses={
            200: {"description": "one Prediction, or {'predictions': [...]}"},
            401: {"description": "missing or wrong X-API-Key (when a key is set)"},
            413: {"description": "body too large"},
            422: {"description": "each refused field, with expected and actual value"},
            429: {"description": "every scoring slot is busy: retry after Retry-After seconds"},
        },
    )
    async def score(request: Request) -> Response:
        if slots.full:  # refused before its body is read, let alone buffered
            return _busy(ScorerBusy(slots.size), metrics)
        try:
            body = await read_capped(request.stream(), settings.api_max_body_bytes)
        except BodyTooLarge as err:
            # The rest of the body stays unread: closing the connection spares reading it.
            return _problem(
                413,
                "oversize",
                [{"field": "body", "problem": str(err)}],
                metrics,
                headers={"Connection": "close"},
            )
        try:
            return await slots.run(lambda: _answer(body, settings, holder, metrics, validator))
        except ScorerBusy as err:
            return _busy(err, metrics)

    @api.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        model = holder.current
        if model is None:
            return {"loaded": False}
        return {
            "loaded": True,
            "name": model.name,
            "version": model.version,
            "sha256": model.sha256,
            "bands": model.bands.as_dict(),
            "features": model.feature_names,
        }

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        model = holder.current
        if model is None:
            return JSONResponse({"ready": False, "problem": "no model loaded yet"}, 503)
        return JSONResponse({"ready": True, "model_version": model.version})

    @api.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    original_openapi = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = original_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(definitions)
            components["LoanApplication"] = application_schema
            prediction = Prediction.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(prediction.pop("$defs", {}))
            components["Prediction"] = prediction
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api
