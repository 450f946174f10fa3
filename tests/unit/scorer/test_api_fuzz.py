"""Schema-driven fuzzing of the REST API from its own OpenAPI document (schemathesis): whatever
a client sends, the scorer answers without a server error."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry
from schemathesis.checks import not_a_server_error

from loanstream.spec import load_spec
from loanstream.validation import ApplicationValidator
from scorer.api import build_api
from scorer.holder import ModelHolder
from scorer.metrics import ScorerMetrics
from scorer.settings import ScorerSettings
from tests.scorer_model import small_model

holder = ModelHolder()
holder.offer(small_model())
app = build_api(
    ScorerSettings(), holder, ScorerMetrics(CollectorRegistry()), ApplicationValidator(load_spec())
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_api_fail(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
