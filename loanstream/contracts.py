"""Event contracts: the JSON every topic carries, owned here and nowhere else.

Every contract is a frozen pydantic model with a ``schema_version``. The rules, chosen on purpose:

- **Extra fields are refused**, so a typo (``"incom"``) is an error rather than a silently
  missing value. A new optional field therefore needs a new ``schema_version``.
- **Missing fields** are errors unless the field has a default (nullable features may be omitted
  or ``null``: both mean "not recorded").
- **NaN and ±inf** are refused everywhere: JSON has no such numbers, and a model fed NaN
  returns garbage without complaint.
- **Types are strict**: a number sent as a string (``"52000"``) or a boolean where a number is
  expected is refused; a whole float (``35.0``) is accepted for an integer feature.
- **Times** are ISO 8601 with a UTC offset; a naive time is refused (it is ambiguous).

Application features are checked against the feature spec by
:class:`loanstream.validation.ApplicationValidator`; the models here fix the envelope.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_core import PydanticUndefined

from loanstream.deadletters import (
    KEY_LIMIT,
    NAME_CHARS,
    RAW_VALUE_LIMIT,
    cut,
    error_text,
    field_paths,
)

SCHEMA_VERSION = 1

ApplicationId = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
FeatureValue = float | int | str | None
Label = Literal[0, 1]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """A time given without an offset (a command-line flag, say) is taken to be UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Contract(BaseModel):
    """Base of every message: frozen, strict about extras and non-finite numbers, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    schema_version: Literal[1] = 1

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        return cls.model_validate_json(data)

    @classmethod
    def trusted(cls, **values: Any) -> Self:
        """An instance of values that are already valid, built without validating them again.

        What ``model_construct`` builds, minus its per-field alias and default lookups (6 us
        instead of 10 for a Prediction on this machine; the scorer builds two objects per
        application). A field left out takes its default; a required one left out, or a name
        that is not a field, is a TypeError. Unit tests hold the result equal to the validated
        model, JSON included.
        """
        template, factories, required = _shape(cls)
        if not required <= values.keys():
            raise TypeError(f"{cls.__name__}.trusted() needs {sorted(required - values.keys())}")
        fields = template.copy()  # every field, in the model's order (update keeps it)
        fields.update(values)
        if len(fields) != len(template):
            raise TypeError(f"{cls.__name__}.trusted() got {sorted(fields.keys() - template)}")
        for name, factory in factories:
            if name not in values:
                fields[name] = factory()
        instance = cls.__new__(cls)
        object.__setattr__(instance, "__dict__", fields)  # frozen: no plain setattr
        object.__setattr__(instance, "__pydantic_fields_set__", set(values))
        object.__setattr__(instance, "__pydantic_extra__", None)
        object.__setattr__(instance, "__pydantic_private__", None)
        return instance


@functools.cache
def _shape(cls: type[BaseModel]) -> tuple[dict[str, Any], list[tuple[str, Any]], frozenset[str]]:
    """``cls``'s fields with their defaults, its default factories, and its required fields."""
    fields = cls.model_fields
    template = {n: None if f.default is PydanticUndefined else f.default for n, f in fields.items()}
    factories = [(n, f.default_factory) for n, f in fields.items() if f.default_factory]
    required = frozenset(n for n, f in fields.items() if f.is_required())
    return template, factories, required


class Decision(StrEnum):
    APPROVE = "approve"
    REVIEW = "review"
    DECLINE = "decline"


class LoanApplication(Contract):
    """An application to score. ``features`` follow the feature spec (checked by the validator)."""

    application_id: ApplicationId
    event_time: AwareDatetime
    features: dict[str, FeatureValue]


class ReasonCode(BaseModel):
    """One feature that lowered this applicant's probability, by how much, and in words (the
    feature spec's description of it; null when the spec gives none)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    feature: str
    contribution: float
    text: str | None = None


class Prediction(Contract):
    """The scorer's answer for one application: probability of on-time repayment and decision."""

    application_id: ApplicationId
    event_time: AwareDatetime
    probability: Probability
    decision: Decision
    model_name: str
    model_version: str
    features: dict[str, FeatureValue]
    reasons: list[ReasonCode] = Field(default_factory=list)
    received_at: AwareDatetime
    scored_at: AwareDatetime


class Outcome(Contract):
    """What happened to a loan, known long after the decision: 1 = repaid on time, 0 = default."""

    application_id: ApplicationId
    label: Label
    outcome_time: AwareDatetime


class LabelledExample(Contract):
    """A prediction joined with its outcome: the feature log retraining reads."""

    application_id: ApplicationId
    event_time: AwareDatetime
    outcome_time: AwareDatetime
    features: dict[str, FeatureValue]
    probability: Probability
    decision: Decision
    model_name: str
    model_version: str
    label: Label


class DriftSignal(StrEnum):
    CONCEPT = "concept"
    DATA = "data"
    PREDICTION = "prediction"
    PERFORMANCE = "performance"


class DriftEvent(Contract):
    """One confirmed detection, with the evidence a person needs to judge it."""

    event_id: str = Field(min_length=1, max_length=128)
    signal: DriftSignal
    detector: str
    feature: str | None = None
    statistic: float
    threshold: float
    p_value: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    window_size: int = Field(ge=0)
    first_position: int = Field(ge=0)
    confirmed_position: int = Field(ge=0)
    first_event_time: AwareDatetime
    confirmed_event_time: AwareDatetime
    model_name: str
    model_version: str
    detected_at: AwareDatetime = Field(default_factory=utcnow)
    expected_rate: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        default=None, description="repayment rate the model promised the evidence's applicants"
    )
    observed_rate: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        default=None, description="repayment rate those applicants showed"
    )


class RetrainRequest(Contract):
    """Ask the trainer for a new model on a window of labelled data."""

    request_id: str = Field(min_length=1, max_length=128)
    model_name: str
    reason: str
    requested_by: str
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None
    drift_event_id: str | None = None
    drift_confirmed_at: AwareDatetime | None = Field(
        default=None, description="event time at which the drift behind this request was confirmed"
    )
    attempt: int = Field(default=1, ge=1, le=100, description="1, or the retry after a lost round")
    min_rows: int | None = Field(
        default=None, ge=1, le=10_000_000, description="labelled rows the window needs at least"
    )
    requested_at: AwareDatetime = Field(default_factory=utcnow)


class RetrainOutcome(StrEnum):
    WAITING = "waiting"  # the round waits for labelled rows of the new regime
    PROMOTED = "promoted"  # the challenger is the new champion
    SHADOWING = "shadowing"  # the challenger scores live traffic in shadow before a verdict
    KEPT_CHAMPION = "kept_champion"  # the challenger lost: the champion keeps serving
    FAILED = "failed"  # the round did not finish (its requests went to the dead letters)


class RetrainResult(Contract):
    """How a retrain round on some requests ended, for people and for the alerts command.
    Like ModelUpdate, it decides nothing: the registry alone says what serves."""

    model_name: str
    outcome: RetrainOutcome
    reason: str = Field(max_length=2000)
    request_ids: list[str] = Field(default_factory=list, max_length=1000)
    drift_event_ids: list[str] = Field(default_factory=list, max_length=1000)
    challenger_version: str | None = None
    champion_version: str | None = Field(
        default=None, description="the champion serving once the round ended"
    )
    metrics: dict[str, float] = Field(default_factory=dict, description="the challenger's")
    champion_metrics: dict[str, float] = Field(default_factory=dict)
    rows: int | None = Field(default=None, ge=0, description="labelled rows the round had")
    rows_needed: int | None = Field(default=None, ge=0)
    finished_at: AwareDatetime = Field(default_factory=utcnow)


class ModelUpdate(Contract):
    """A champion was promoted: a prompt to look in the registry now, which alone decides what
    serves (its alias and the sha256 it recorded). The fields name what the trainer promoted,
    for people and for the story of a run; no service loads what a message names."""

    model_name: str
    version: str
    run_id: str
    model_uri: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    metrics: dict[str, float] = Field(default_factory=dict)
    promoted_at: AwareDatetime = Field(default_factory=utcnow)
    signature: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="HMAC-SHA256 of the update without it (loanstream.signing), when keyed",
    )


class DeadLetter(Contract):
    """A message a consumer could not use: where it was, why, which fields failed, and what its
    bytes were (size and sha256), so it can be found and told apart without keeping it.

    The raw value is dropped unless asked for (``raw``, from ``LOANSTREAM_KAFKA_DEAD_LETTER_RAW``):
    it holds an applicant's personal data. Error texts are cut of the values they quote, and
    every part is capped (:mod:`loanstream.deadletters`), so a dead letter can always be sent.
    Letters written before these fields existed read as before (``value_b64`` and all).

    >>> letter = DeadLetter.of(
    ...     source_topic="loan.applications", partition=0, offset=7, key=b"a-1",
    ...     value=b'{"income": 98765}', reason="out_of_range",
    ...     error="features.income must be within [0, 50000], got 98765", service="scorer",
    ... )
    >>> letter.error, letter.value(), letter.value_bytes, letter.value_sha256[:12]
    ('features.income must be within [0, 50000]', None, 17, '4e2d4cb49847')
    """

    source_topic: str
    partition: int = Field(ge=-1)
    offset: int = Field(ge=-1)
    key_b64: str | None
    value_b64: str | None = Field(
        default=None, description="the raw value (at most its first 16 KiB), only when asked for"
    )
    value_bytes: int | None = Field(default=None, ge=0, description="size of the raw value")
    value_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the whole raw value"
    )
    field_paths: list[str] | None = Field(
        default=None,
        description="fields that failed validation (e.g. 'features.income'); None: not a "
        "validation failure",
    )
    reason: str = Field(description="short, low-cardinality code, e.g. 'invalid', 'oversize'")
    error: str = Field(description="what was expected and what came (without the values)")
    service: str
    failed_at: AwareDatetime = Field(default_factory=utcnow)

    @classmethod
    def of(
        cls,
        *,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        error: str | BaseException,
        service: str,
        raw: bool = False,
    ) -> DeadLetter:
        """The dead letter of the whole record ``value``; pass the exception itself as ``error``
        so the failed field paths are kept (a string is redacted, but has none)."""
        return cls(
            source_topic=cut(source_topic, NAME_CHARS),
            partition=partition,
            offset=offset,
            key_b64=None if key is None else base64.b64encode(key[:KEY_LIMIT]).decode(),
            value_b64=(
                base64.b64encode(value[:RAW_VALUE_LIMIT]).decode()
                if raw and value is not None
                else None
            ),
            value_bytes=None if value is None else len(value),
            value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
            field_paths=field_paths(error),
            reason=cut(reason, NAME_CHARS),
            error=error_text(error),
            service=cut(service, NAME_CHARS),
        )

    def key(self) -> bytes | None:
        """The record's key (its first 1 KiB): also the key to send the dead letter under."""
        return None if self.key_b64 is None else base64.b64decode(self.key_b64)

    def value(self) -> bytes | None:
        """The raw value if it was kept (see ``value_bytes`` for how much of it), else None."""
        return None if self.value_b64 is None else base64.b64decode(self.value_b64)


CONTRACTS: dict[str, type[Contract]] = {
    "LoanApplication": LoanApplication,
    "Prediction": Prediction,
    "Outcome": Outcome,
    "LabelledExample": LabelledExample,
    "DriftEvent": DriftEvent,
    "RetrainRequest": RetrainRequest,
    "ModelUpdate": ModelUpdate,
    "DeadLetter": DeadLetter,
}
