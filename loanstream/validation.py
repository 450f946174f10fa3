"""Check raw application messages against the envelope contract and the feature spec.

A pure function of bytes: no Kafka here. Every failure becomes :class:`InvalidRecord` whose
problems name the field, what was expected and what came, and whose ``reason`` is one of a
few codes (``malformed_json``, ``missing_field``, ``unknown_field``, ``wrong_type``,
``out_of_range``, ``non_finite``, ``invalid_value``, ``oversize``, ``time_out_of_bounds``)
fit for a metric label.

>>> from loanstream.spec import load_spec
>>> v = ApplicationValidator(load_spec())
>>> v.parse(b'{"application_id": "a1", "event_time": "2026-01-31T12:00:00Z", "features": {}}')
Traceback (most recent call last):
...
loanstream.errors.InvalidRecord: features.income is required but missing; ...
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
)
from pydantic_core import ErrorDetails

from loanstream.contracts import ApplicationId, Contract, LoanApplication
from loanstream.errors import InvalidRecord
from loanstream.spec import CategoricalFeature, FeatureSpec, NumericFeature
from loanstream.timebounds import TimeWindow

DEFAULT_MAX_BYTES = 64 * 1024

_REASONS = {
    "json_invalid": "malformed_json",
    "json_type": "malformed_json",
    "recursion_loop": "malformed_json",
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
    "literal_error": "out_of_range",
    "finite_number": "non_finite",
    "string_too_short": "invalid_value",
    "string_too_long": "invalid_value",
    "string_pattern_mismatch": "invalid_value",
}

_JSON_TYPE_NAMES = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _whole_float_to_int(value: object) -> object:
    """Accept 35.0 for an integer feature (pandas writes ints as floats); refuse 35.5."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _show(value: object) -> str:
    kind = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{kind} {text}"


def _feature_field(feature: NumericFeature | CategoricalFeature) -> tuple[Any, Any]:
    kind: Any
    if isinstance(feature, CategoricalFeature):
        kind = Literal[tuple(feature.values)]
    elif feature.type == "integer":
        kind = Annotated[
            int,
            Field(strict=True, ge=int(feature.min), le=int(feature.max)),
            BeforeValidator(_whole_float_to_int),
        ]
    else:
        kind = Annotated[
            float, Field(strict=True, ge=feature.min, le=feature.max, allow_inf_nan=False)
        ]
    description = feature.description or None
    if feature.nullable:
        return (kind | None, Field(default=None, description=description))
    return (kind, Field(description=description))


class ApplicationValidator:
    """Parse and check :class:`LoanApplication` messages for one feature spec."""

    def __init__(
        self,
        spec: FeatureSpec,
        max_bytes: int = DEFAULT_MAX_BYTES,
        times: TimeWindow | None = None,
    ) -> None:
        self.spec = spec
        self.max_bytes = max_bytes
        self.times = times  # live services: event times must lie around the wall clock

    @cached_property
    def model(self) -> type[BaseModel]:
        """The envelope with this spec's features, as one pydantic model (also its JSON Schema)."""
        features = create_model(  # type: ignore[call-overload]
            "Features",
            __config__=ConfigDict(extra="forbid", frozen=True),
            **{f.name: _feature_field(f) for f in self.spec.features},
        )
        return create_model(
            "LoanApplication",
            __base__=Contract,
            __doc__=f"A loan application under feature spec '{self.spec.name}'.",
            application_id=(ApplicationId, ...),
            event_time=(AwareDatetime, ...),
            features=(features, ...),
        )

    def parse(self, raw: bytes | str) -> LoanApplication:
        """Validate one message's bytes; raise :class:`InvalidRecord` with every problem."""
        if len(raw) > self.max_bytes:
            raise InvalidRecord(
                [f"message must be at most {self.max_bytes} bytes, got {len(raw)}"], "oversize"
            )
        try:
            checked = self.model.model_validate_json(raw)
        except ValidationError as err:
            raise self._invalid(err) from None
        return self._application(checked)

    def validate(self, data: dict[str, Any]) -> LoanApplication:
        """Validate an already-decoded message (REST bodies, file rows)."""
        try:
            checked = self.model.model_validate(data)
        except ValidationError as err:
            raise self._invalid(err) from None
        return self._application(checked)

    def _application(self, checked: Any) -> LoanApplication:
        if self.times is not None:
            self.times.check("event_time", checked.event_time, datetime.now(UTC))
        return LoanApplication.trusted(
            application_id=checked.application_id,
            event_time=checked.event_time,
            features=checked.features.model_dump(),
        )

    def _invalid(self, err: ValidationError) -> InvalidRecord:
        details = err.errors(include_url=False)
        problems = [self._describe(e) for e in details]
        first = details[0]
        if first["loc"] == ("schema_version",):
            return InvalidRecord(problems, reason="unsupported_version")
        return InvalidRecord(problems, reason=_REASONS.get(first["type"], "wrong_type"))

    def _describe(self, e: ErrorDetails) -> str:
        loc = ".".join(str(p) for p in e["loc"])
        kind, value = e["type"], e["input"]
        feature = self._feature_at(e["loc"])
        if kind in ("json_invalid", "recursion_loop"):
            return f"message must be valid JSON: {e.get('ctx', {}).get('error', e['msg'])}"
        if kind == "missing":
            return f"{loc} is required but missing"
        if value is None and kind.endswith("_type"):
            return f"{loc} must not be null"
        if kind == "extra_forbidden":
            where = (
                f"feature spec '{self.spec.name}'" if loc.startswith("features.") else "contract"
            )
            return f"{loc} is not a field of the {where}"
        if kind in ("greater_than_equal", "less_than_equal") and isinstance(
            feature, NumericFeature
        ):
            bounds = f"[{_num(feature.min)}, {_num(feature.max)}]"
            return f"{loc} must be within {bounds}, got {_num(value)}"
        if kind == "literal_error":
            if isinstance(feature, CategoricalFeature):
                return f"{loc} must be one of {feature.values}, got {_show(value)}"
            return f"{loc} must be {e.get('ctx', {}).get('expected')}, got {_show(value)}"
        if kind == "finite_number":
            return f"{loc} must be a finite number, got {value}"
        if kind in ("float_type", "float_parsing"):
            return f"{loc} must be a number, got {_show(value)}"
        if kind in ("int_type", "int_parsing", "int_from_float"):
            return f"{loc} must be an integer, got {_show(value)}"
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            return f"{loc or 'message'} must be a JSON object, got {_show(value)}"
        if kind == "timezone_aware":
            return f"{loc} must carry a UTC offset (e.g. 2026-01-31T12:00:00Z), got {_show(value)}"
        if kind.startswith(("datetime", "date_")):
            return f"{loc} must be an ISO 8601 time with offset, got {_show(value)}"
        return f"{loc}: {e['msg'][0].lower()}{e['msg'][1:]}, got {_show(value)}"

    def _feature_at(self, loc: tuple[int | str, ...]) -> NumericFeature | CategoricalFeature | None:
        if len(loc) == 2 and loc[0] == "features" and loc[1] in self.spec.feature_names:
            return self.spec.feature(str(loc[1]))
        return None
