"""Register a scikit-learn model trained outside LoanStream, served like any other once it is in.

The model comes as a skops file (or from an MLflow run that logged it in skops format): never a
pickle, which runs whatever it holds when loaded. It may hold only the types LoanStream trusts
and those its owner declares with ``--trust module.Class``; any other type is refused by name
before anything is loaded. The declared types are recorded with the registered version, and the
services trust them only for the file whose sha256 the registry recorded (loanstream.models).

Before it is registered the model must answer ``predict_proba`` with two classes, 0 (defaulted)
and 1 (repaid) as the spec's target says, on rows made from the spec's own columns and on the
labelled history given with ``--data``. That history also measures it (AUC, Brier, ECE on its
newest quarter), gives the monitor its reference distribution, and calibrates it when needed: a
model is taken as calibrated when it is a ``CalibratedClassifierCV`` whose ECE on the newest
quarter is at most ``max_ece``; any other is calibrated on the oldest rows (sigmoid or isotonic,
whichever has the lower Brier score on the rows after them), as the trainer calibrates its own.
The version is then logged through the trainer's registry, with the same metadata (bands,
reference, feature names, spec fingerprint) and the same sha256 tag as a trained one.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline

from loanstream.errors import LoanStreamError
from loanstream.models import MODEL_FILE, TRUSTED_TYPES, TYPE_NAME, read_yaml
from loanstream.spec import CategoricalFeature, FeatureSpec
from loanstream.tracking import point_mlflow_at
from trainer.data import time_split
from trainer.evaluate import classification_metrics
from trainer.pipeline import options_from
from trainer.reference import reference_profile
from trainer.registry import RegisteredVersion, Registry
from trainer.settings import TrainerSettings
from trainer.train import TrainingResult, calibrate_best

logger = logging.getLogger(__name__)

DEFAULT_MAX_ECE = 0.05
MIN_ROWS = 500  # a labelled history shorter than this measures and calibrates nothing
PROBE_ROWS = 64
REFERENCE_ROWS = 20_000
PICKLES = (".pkl", ".pickle", ".joblib", ".sav")


class OutsideModelRefused(LoanStreamError):
    """The model cannot be registered; the message says why in one line."""


def read_model(path: Path, trust: Sequence[str] = ()) -> Any:
    """The model in the skops file ``path``, loaded only if every type it holds is trusted
    (LoanStream's list plus ``trust``)."""
    if path.suffix.lower() in PICKLES:
        raise OutsideModelRefused(
            f"{path} is a pickle, which runs arbitrary code when loaded: save the model with "
            "skops.io.dump(model, 'model.skops') where it was trained, and register that"
        )
    if not path.is_file():
        raise OutsideModelRefused(f"{path}: no such file")
    bad = [t for t in trust if not TYPE_NAME.fullmatch(t)]
    if bad:
        raise OutsideModelRefused(f"--trust takes module.Class names, got {bad}")
    try:
        found = sio.get_untrusted_types(file=path)
    except Exception as err:  # not a skops file: a zip skops cannot read
        raise OutsideModelRefused(f"{path} is not a skops model file: {err}") from None
    untrusted = sorted(set(found) - set(TRUSTED_TYPES) - set(trust))
    if untrusted:
        flags = " ".join(f"--trust {t}" for t in untrusted)
        raise OutsideModelRefused(
            f"{path} holds types that are not trusted: {', '.join(untrusted)} (if you trust "
            f"their code, and it is importable where the model is served, pass {flags})"
        )
    return sio.load(path, trusted=[*TRUSTED_TYPES, *trust])


def read_run_model(
    run_id: str, tracking_uri: str, trust: Sequence[str] = (), artifact_path: str = "model"
) -> Any:
    """The model an MLflow run logged at ``artifact_path``, if it was logged in skops format."""
    import mlflow

    point_mlflow_at(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"runs:/{run_id}/{artifact_path}", dst_path=tmp
                )
            )
        except Exception as err:
            raise OutsideModelRefused(
                f"cannot fetch runs:/{run_id}/{artifact_path} from {tracking_uri}: {err}"
            ) from None
        flavor = {}
        if (local / "MLmodel").exists():
            flavor = read_yaml((local / "MLmodel").read_text()).get("flavors", {}).get("sklearn")
        if not flavor or flavor.get("serialization_format") != "skops":
            raise OutsideModelRefused(
                f"runs:/{run_id}/{artifact_path} is not a scikit-learn model logged in skops "
                "format: log it with mlflow.sklearn.log_model(..., serialization_format='skops')"
            )
        return read_model(local / flavor.get("pickled_model", MODEL_FILE), trust)


def check_interface(model: Any) -> None:
    """predict_proba, and two classes: 0 (defaulted) and 1 (repaid), in that order."""
    if not callable(getattr(model, "predict_proba", None)):
        raise OutsideModelRefused(f"{type(model).__name__} has no predict_proba")
    classes = getattr(model, "classes_", None)
    if classes is None:
        raise OutsideModelRefused(f"{type(model).__name__} is not fitted (it has no classes_)")
    if [int(c) if isinstance(c, int | np.integer) else c for c in classes] != [0, 1]:
        raise OutsideModelRefused(
            f"the model's classes are {list(classes)}; LoanStream needs two, 0 (defaulted) and "
            "1 (repaid), with predict_proba[:, 1] the probability of repayment"
        )


def spec_rows(spec: FeatureSpec, rows: int = PROBE_ROWS, seed: int = 0) -> pd.DataFrame:
    """Rows with the spec's feature columns: values across each allowed range or set, and a
    missing value now and then where the spec allows one."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for feature in spec.features:
        if isinstance(feature, CategoricalFeature):
            column: Any = pd.Series(
                [feature.values[i % len(feature.values)] for i in range(rows)], dtype=object
            )
        else:
            values = rng.uniform(feature.min, min(feature.max, feature.min + 1e6), rows)
            column = pd.Series(np.round(values) if feature.type == "integer" else values)
        if feature.nullable:
            column[rng.random(rows) < 0.1] = None
        columns[feature.name] = column
    return pd.DataFrame(columns, columns=spec.feature_names)


def check_columns(model: Any, spec: FeatureSpec, frame: pd.DataFrame, where: str) -> np.ndarray:
    """P(repaid) of ``frame``'s rows; refused if the model needs other columns or cannot score
    them (the error says which and why)."""
    wanted = getattr(model, "feature_names_in_", None)
    if wanted is not None:
        missing = [str(c) for c in wanted if c not in spec.feature_names]
        if missing:
            raise OutsideModelRefused(
                f"the model needs columns {missing} that spec '{spec.name}' does not have"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            p = np.asarray(model.predict_proba(frame[spec.feature_names]), dtype=float)
    except Exception as err:
        raise OutsideModelRefused(
            f"the model cannot score spec '{spec.name}''s feature columns ({where}): "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    if p.shape != (len(frame), 2) or not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise OutsideModelRefused(
            f"predict_proba on {where} gave {p.shape} values, not one probability pair per row"
        )
    return p[:, 1]


def is_calibrated(model: Any) -> bool:
    """A CalibratedClassifierCV, alone or as a pipeline's last step."""
    if isinstance(model, Pipeline):
        model = model.steps[-1][1]
    return isinstance(model, CalibratedClassifierCV)


@dataclass(frozen=True)
class Calibration:
    """The model to register, how it was calibrated and what that did on the newest rows."""

    model: Any
    method: str  # "own": kept as it came; "sigmoid" | "isotonic": calibrated here
    reason: str
    uncalibrated: dict[str, float]
    calibrated: dict[str, float]
    test: pd.DataFrame
    p_test: np.ndarray
    p_raw: np.ndarray


def calibration(model: Any, data: pd.DataFrame, spec: FeatureSpec, max_ece: float) -> Calibration:
    """Keep ``model`` if it is calibrated and its ECE on the newest quarter is within
    ``max_ece``, else calibrate it on the older rows (see the module docstring)."""
    x, target = spec.feature_names, spec.target_column
    split = time_split(data, spec, test=0.25, validate=0.75)  # no training split: 3/8, 3/8, 1/4
    for part, rows in (("calibration", split.calibrate), ("newest", split.test)):
        if rows[target].nunique() < 2:
            raise OutsideModelRefused(f"the {part} rows of --data hold only one class of {target}")
    y_test = split.test[target].to_numpy()
    p_raw = check_columns(model, spec, split.test, "the --data rows")
    raw = classification_metrics(y_test, p_raw)
    if is_calibrated(model) and raw["ece"] <= max_ece:
        reason = f"calibrated as it came: ECE {raw['ece']:.4f} <= {max_ece} on the newest rows"
        return Calibration(model, "own", reason, raw, raw, split.test, p_raw, p_raw)
    method, _, fitted = calibrate_best(
        model,
        split.calibrate[x],
        split.calibrate[target].to_numpy(),
        split.validate[x],
        split.validate[target].to_numpy(),
    )
    p_test = np.asarray(fitted.predict_proba(split.test[x])[:, 1], dtype=float)
    calibrated = classification_metrics(y_test, p_test)
    why = "not a CalibratedClassifierCV" if not is_calibrated(model) else f"ECE above {max_ece}"
    reason = (
        f"{why}: calibrated ({method}) on the older rows of --data, ECE {raw['ece']:.4f} -> "
        f"{calibrated['ece']:.4f} on the newest"
    )
    return Calibration(fitted, method, reason, raw, calibrated, split.test, p_test, p_raw)


def describe(model: Any) -> str:
    """The model's kind for the registry's list, e.g. outside-RandomForestClassifier."""
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    inner = getattr(final, "estimator", None)
    if isinstance(final, CalibratedClassifierCV) and inner is not None:
        final = inner.steps[-1][1] if isinstance(inner, Pipeline) else inner
    return f"outside-{type(final).__name__}"


def register_outside(
    model: Any,
    source: str,
    spec: FeatureSpec,
    data: pd.DataFrame | None,
    settings: TrainerSettings,
    registry: Registry,
    trust: Sequence[str] = (),
    max_ece: float = DEFAULT_MAX_ECE,
    tags: dict[str, str] | None = None,
) -> tuple[RegisteredVersion, Calibration]:
    """Check ``model`` (see the module docstring) and register it; nothing is registered when
    a check refuses it."""
    check_interface(model)
    check_columns(model, spec, spec_rows(spec), "rows made from the spec")
    if data is None:
        needs = "" if is_calibrated(model) else f" (and {describe(model)} is not calibrated)"
        raise OutsideModelRefused(
            "no --data given: a labelled history with the spec's columns and its target is "
            f"needed to measure the model, calibrate it if need be, and give the monitor its "
            f"reference distribution{needs}"
        )
    if len(data) < MIN_ROWS:
        raise OutsideModelRefused(f"--data holds {len(data)} usable rows, at least {MIN_ROWS}")
    chosen = calibration(model, data, spec, max_ece)
    sample = data.iloc[:REFERENCE_ROWS]
    result = TrainingResult(
        model=chosen.model,
        name=describe(model),
        params={"source": source[:500], "trusted_types": ",".join(trust)[:500]},
        calibration=chosen.method,
        uncalibrated=chosen.uncalibrated,
        calibrated=chosen.calibrated,
        bands=options_from(settings).bands,
        reference=reference_profile(
            data, spec, chosen.model.predict_proba(sample[spec.feature_names])[:, 1]
        ),
        importance={},
        candidates=[],
        test_frame=chosen.test,
        test_probability=chosen.p_test,
        test_uncalibrated=chosen.p_raw,
    )
    version = registry.log(
        result,
        spec,
        data,
        {"source": "outside", "model_source": source[:5000], **(tags or {})},
        trusted=tuple(trust),
    )
    registry.tag_version(version.version, "registration_reason", chosen.reason)
    if trust:
        registry.tag_version(version.version, "trusted_types", ",".join(trust))
    return version, chosen
