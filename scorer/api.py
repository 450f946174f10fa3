"""REST scoring on the same core and the same hot-swapped model as the stream.

POST /v1/score takes one application, or ``{"applications": [...]}``, checked by the same
validator as the stream; a refused request answers 4xx naming each field. GET /v1/model,
/healthz (alive), /readyz (a model is loaded) and /metrics (Prometheus) complete it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from loanstream.contracts import LoanApplication, Prediction
from loanstream.errors import InvalidRecord
from loanstream.validation import ApplicationValidator
from scorer.core import score_batch
from scorer.holder import ModelHolder
from scorer.metrics import ScorerMetrics
from scorer.settings import ScorerSettings

PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect"}


def _problem(
    status: int, reason: str, errors: list[dict[str, Any]], metrics: ScorerMetrics
) -> JSONResponse:
    metrics.rejected_requests.labels(reason).inc()
    return JSONResponse({"reason": reason, "errors": errors}, status_code=status)


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

    @api.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        key = settings.api_key
        if (
            request.url.path not in PUBLIC
            and key is not None
            and request.headers.get("x-api-key") != key.get_secret_value()
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
            413: {"description": "body too large"},
            422: {"description": "each refused field, with expected and actual value"},
        },
    )
    async def score(request: Request) -> Response:
        body = await request.body()
        if len(body) > settings.api_max_body_bytes:
            return _problem(
                413,
                "oversize",
                [
                    {
                        "field": "body",
                        "problem": f"body must be at most {settings.api_max_body_bytes} bytes",
                    }
                ],
                metrics,
            )
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            return _problem(
                400, "malformed_json", [{"field": "body", "problem": str(err)}], metrics
            )
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
        model, typical, _ = holder.take()
        if model is None:
            return _problem(
                503, "no_model", [{"field": "model", "problem": "no model loaded"}], metrics
            )
        now = datetime.now(UTC)
        predictions = score_batch(model, apps, now, now, settings.reasons, typical)
        for p in predictions:
            metrics.scored.labels(p.decision.value, p.model_version, "rest").inc()
        if single:
            return Response(predictions[0].to_json(), media_type="application/json")
        payload = b'{"predictions":[' + b",".join(p.to_json() for p in predictions) + b"]}"
        return Response(payload, media_type="application/json")

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
