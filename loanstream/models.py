"""The model artifact every service agrees on: a skops file of a calibrated scikit-learn
classifier, and MLflow's ``MLmodel`` metadata with the decision bands, the training reference
distribution and the feature names. Loading verifies the file's sha256 and refuses any type
outside an explicit trusted list (skops would otherwise have to run arbitrary code).

>>> bands = DecisionBands.from_costs(wrong_approval=5.0, wrong_decline=1.0, review=0.5)
>>> bands.decline_below, bands.approve_from
(0.5, 0.9)
>>> [bands.decide(p) for p in (0.3, 0.7, 0.95)]
['decline', 'review', 'approve']
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio
import yaml

from loanstream.errors import LoanStreamError
from loanstream.tracking import point_mlflow_at

MODEL_FILE = "model.skops"

# Every type a LoanStream model may hold beyond what skops trusts by default. A model file with
# anything else is refused: skops would otherwise have to run arbitrary code to rebuild it.
TRUSTED_TYPES = [
    "functools.partial",
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.frozen._frozen.FrozenEstimator",
    "sklearn.tree._tree.Tree",
    "sklearn.utils.validation.check_array",
]
TRUSTED_KEY = "trusted_types"  # MLmodel metadata: extra types its owner declared trusted
TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


class ModelRejected(LoanStreamError):
    """A model file failed its checksum or holds types outside the trusted list."""


@dataclass(frozen=True)
class LoadedModel:
    """A verified model with what the scorer and monitor need beside it."""

    model: Any
    name: str
    version: str
    sha256: str
    bands: DecisionBands
    reference: dict[str, Any]
    feature_names: list[str]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_model_file(directory: Path, expected_sha256: str | None) -> tuple[Any, dict[str, Any]]:
    """(model, MLmodel metadata) from a downloaded model directory, verified."""
    path = directory / MODEL_FILE
    if not path.exists():
        raise ModelRejected(f"{directory} holds no {MODEL_FILE}")
    actual = sha256_of(path)
    if expected_sha256 is not None and actual != expected_sha256:
        raise ModelRejected(
            f"model file sha256 is {actual}, expected {expected_sha256}: refusing to load it"
        )
    mlmodel = directory / "MLmodel"
    metadata = read_yaml(mlmodel.read_text()).get("metadata", {}) if mlmodel.exists() else {}
    # A model registered from outside (`loanstream model register --trust`) may hold the types its
    # owner declared, recorded beside it; they count only for a file the registry's sha256 vouches
    # for, so they can widen trust for nothing but the bytes that were checked when registered.
    trusted = [*TRUSTED_TYPES, *(declared_types(metadata) if expected_sha256 else [])]
    untrusted = sorted(set(sio.get_untrusted_types(file=path)) - set(trusted))
    if untrusted:
        raise ModelRejected(f"model file holds types outside the trusted list: {untrusted}")
    try:
        model = sio.load(path, trusted=trusted)
    except ImportError as error:  # a declared type whose code is not installed here
        raise ModelRejected(
            f"the model needs {error.name or 'a module'}, which cannot be imported here: install "
            f"it or put it on PYTHONPATH where the model is served ({error})"
        ) from error
    return model, metadata


def declared_types(metadata: dict[str, Any]) -> list[str]:
    """The extra trusted types a model's metadata declares (``module.Class`` names)."""
    declared = metadata.get(TRUSTED_KEY) or []
    if not isinstance(declared, list) or not all(
        isinstance(t, str) and TYPE_NAME.fullmatch(t) for t in declared
    ):
        raise ModelRejected(f"{TRUSTED_KEY} in the model's metadata is not a list of type names")
    return declared


def read_yaml(text: str) -> Any:
    """YAML, parsed safely by libyaml where PyYAML has it: the pure-Python parser took 2/3 of a
    model load (~70 ms of CPU for the reference's quantiles), beside a scorer at full speed."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@dataclass(frozen=True)
class DecisionBands:
    """Decline below ``decline_below``, approve from ``approve_from``, review in between.

    Derived from costs: approving a defaulter costs ``wrong_approval``, declining a good payer
    costs ``wrong_decline``, a manual review costs ``review``. Each decision is taken where its
    expected cost is lowest: approve when (1-p)*wrong_approval < review, decline when
    p*wrong_decline < review. If review never pays, the bands meet at the break-even point.
    """

    decline_below: float
    approve_from: float
    wrong_approval: float
    wrong_decline: float
    review: float

    def __post_init__(self) -> None:
        low, high = self.decline_below, self.approve_from
        if not (isinstance(low, int | float) and isinstance(high, int | float)):
            raise ValueError(f"decision bands must be numbers, got {low!r} and {high!r}")
        if not 0.0 <= low <= high <= 1.0:  # NaN fails too
            raise ValueError(
                "decision bands must satisfy 0 <= decline_below <= approve_from <= 1, got "
                f"decline_below={low!r}, approve_from={high!r}"
            )

    @classmethod
    def from_costs(
        cls, wrong_approval: float, wrong_decline: float, review: float
    ) -> DecisionBands:
        if min(wrong_approval, wrong_decline) <= 0 or review < 0:
            raise ValueError("costs must be positive (review may be 0)")
        low = review / wrong_decline
        high = 1.0 - review / wrong_approval
        if low >= high:  # reviewing is never the cheapest: one threshold
            low = high = wrong_approval / (wrong_approval + wrong_decline)
        return cls(round(low, 6), round(high, 6), wrong_approval, wrong_decline, review)

    def decide(self, p: float) -> str:
        if p >= self.approve_from:
            return "approve"
        return "decline" if p < self.decline_below else "review"

    def decide_many(self, p: np.ndarray) -> np.ndarray:
        return np.where(
            p >= self.approve_from, "approve", np.where(p < self.decline_below, "decline", "review")
        )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def download_and_load(
    model_uri: str, tracking_uri: str, expected_sha256: str | None, name: str, version: str
) -> LoadedModel:
    """Fetch a registered model from MLflow and load it verified."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    point_mlflow_at(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        model, metadata = load_model_file(local, expected_sha256)
        sha = sha256_of(local / MODEL_FILE)
    try:
        bands = DecisionBands(**metadata["bands"])
        reference, features = metadata["reference"], list(metadata["feature_names"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelRejected(f"{name} v{version}: its metadata is unusable: {err}") from None
    return LoadedModel(model, name, version, sha, bands, reference, features)


CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"  # a version scoring in shadow beside the champion
PROMOTED_BY_TAG = "promoted_by"  # "rollback" on a version `loanstream model rollback` brought back


@dataclass(frozen=True)
class RegisteredModel:
    """A model version as the MLflow registry records it: the registry, not a message, says
    which version is champion and what its file's sha256 must be."""

    name: str
    version: str
    sha256: str
    rollback: bool = False  # brought back by `loanstream model rollback`

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def newer_than(self, version: str | None) -> bool:
        """True when this version is numbered after ``version`` (or there is none)."""
        return version is None or _number(self.version) > _number(version)


def _number(version: str) -> int:
    return int(version) if version.isdigit() else -1


def registry_client(tracking_uri: str) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


def is_absent(error: Exception, alias: str | None = None) -> bool:
    """Whether ``error`` is MLflow saying the registered model (or its ``alias``) does not
    exist, the one failure that means "none yet" rather than "cannot tell".

    MLflow 3 raises RESOURCE_DOES_NOT_EXIST for a missing model, on a SQLite store and through
    a tracking server alike; a missing alias is INVALID_PARAMETER_VALUE with the message
    "Registered model alias <alias> not found." (``sqlalchemy_store.py``, ``file_store.py``).
    """
    from mlflow.exceptions import MlflowException

    if not isinstance(error, MlflowException):
        return False
    if error.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    return (
        alias is not None
        and error.error_code == "INVALID_PARAMETER_VALUE"
        and f"alias {alias} not found" in error.message
    )


def registered(
    client: Any, name: str, version: str | None = None, alias: str = CHAMPION_ALIAS
) -> RegisteredModel | None:
    """``version`` of model ``name`` (default: the one its ``alias`` names, the champion) as the
    registry records it; None when there is no such model or alias yet. Any other registry error
    is raised."""
    from mlflow.exceptions import MlflowException

    try:
        found = (
            client.get_model_version(name, version)
            if version is not None
            else client.get_model_version_by_alias(name, alias)
        )
    except MlflowException as err:
        if is_absent(err, alias if version is None else None):
            return None
        raise
    sha = found.tags.get("sha256", "")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ModelRejected(f"{name} v{found.version} has no sha256 recorded in the registry")
    rollback = found.tags.get(PROMOTED_BY_TAG) == "rollback"
    return RegisteredModel(name, str(found.version), sha, rollback)


def repaid_probability(model: Any, frame: Any) -> np.ndarray:
    """P(repaid on time) per row of ``frame``."""
    return np.asarray(model.predict_proba(frame)[:, 1], dtype=float)
