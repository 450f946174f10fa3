import json
import random

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from loanstream.contracts import Prediction
from loanstream.models import LoadedModel
from loanstream.spec import load_spec
from loanstream.validation import ApplicationValidator
from scorer.api import build_api
from scorer.holder import ModelHolder
from scorer.metrics import ScorerMetrics
from scorer.settings import ScorerSettings
from tests.helpers import application_json
from tests.scorer_model import small_model

SPEC = load_spec()


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return small_model()


def client(model: LoadedModel | None, **settings: object) -> TestClient:
    holder = ModelHolder()
    if model is not None:
        holder.offer(model)
    api = build_api(
        ScorerSettings(**settings),
        holder,
        ScorerMetrics(CollectorRegistry()),  # type: ignore[arg-type]
        ApplicationValidator(SPEC),
    )
    return TestClient(api)


def body(i: int) -> dict[str, object]:
    return json.loads(application_json(SPEC, i, random.Random(i)))  # type: ignore[no-any-return]


def test_single_and_batch_scoring(model: LoadedModel) -> None:
    c = client(model)
    one = c.post("/v1/score", json=body(1))
    assert one.status_code == 200
    assert Prediction.model_validate(one.json()).application_id == "app-0000001"
    many = c.post("/v1/score", json={"applications": [body(i) for i in range(5)]})
    assert [p["application_id"] for p in many.json()["predictions"]] == [
        f"app-{i:07d}" for i in range(5)
    ]
    assert c.get("/v1/model").json()["version"] == "1"
    assert c.get("/readyz").status_code == 200
    metrics = c.get("/metrics").text
    assert "loanstream_scorer_applications_total{decision=" in metrics
    assert 'source="rest"' in metrics


def test_errors_name_the_field(model: LoadedModel) -> None:
    c = client(model, api_max_batch=3, api_max_body_bytes=4096)
    bad = body(1)
    bad["features"]["credit_score"] = 9999  # type: ignore[index]
    refused = c.post("/v1/score", json=bad)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["problems"] == [
        "features.credit_score must be within [300, 850], got 9999"
    ]
    assert c.post("/v1/score", content=b"{nope").json()["reason"] == "malformed_json"
    too_many = c.post("/v1/score", json={"applications": [body(i) for i in range(4)]})
    assert too_many.status_code == 422 and too_many.json()["reason"] == "invalid_batch"
    huge = c.post("/v1/score", content=b"[" + b" " * 5000 + b"]")
    assert huge.status_code == 413
    assert c.post("/v1/score", json=[1, 2]).status_code == 422


def test_api_key_and_readiness(model: LoadedModel) -> None:
    locked = client(model, api_key=SecretStr("s3cret"))
    assert locked.post("/v1/score", json=body(1)).status_code == 401
    keyed = locked.post("/v1/score", json=body(1), headers={"X-API-Key": "s3cret"})
    assert keyed.status_code == 200
    assert locked.get("/healthz").status_code == 200  # probes need no key
    empty = client(None)
    assert empty.get("/readyz").status_code == 503
    assert empty.post("/v1/score", json=body(1)).status_code == 503


def test_the_openapi_document_describes_the_application_schema(model: LoadedModel) -> None:
    document = client(model).get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert schemas["Features"]["properties"]["credit_score"]["maximum"] == 850
    request = document["paths"]["/v1/score"]["post"]["requestBody"]["content"]
    assert "oneOf" in request["application/json"]["schema"]
    assert "Prediction" in schemas and "ReasonCode" in schemas
