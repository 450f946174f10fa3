"""A model trained outside LoanStream: a custom pipeline (a transformer class of this module) is
refused unless its type is declared trusted, refused when it needs a column the spec lacks or has
other classes, calibrated on --data when it is not, and loads back (in a real SQLite registry)
only through the sha256 the registry recorded."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import typer
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from typer.testing import CliRunner

from loanstream.models import ModelRejected, load_model_file
from loanstream.spec import FeatureSpec
from loanstream.tracking import point_mlflow_at
from tests.trainer_data import history
from trainer.cli import register
from trainer.data import labelled_frame
from trainer.outside import OutsideModelRefused, read_model, read_run_model, register_outside
from trainer.registry import Registry
from trainer.settings import TrainerSettings


class Clipper(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Clip each column to its 1st-99th percentile in training: a type skops does not know."""

    def fit(self, X: Any, y: Any = None) -> Clipper:
        values = np.asarray(X, dtype=float)
        self.low_ = np.nanpercentile(values, 1, axis=0)
        self.high_ = np.nanpercentile(values, 99, axis=0)
        return self

    def transform(self, X: Any) -> np.ndarray:
        return np.clip(np.asarray(X, dtype=float), self.low_, self.high_)


CLIPPER = f"{__name__}.Clipper"


def pipeline(spec: FeatureSpec, extra: list[str] | None = None) -> Pipeline:
    numeric = [f.name for f in spec.numeric_features] + (extra or [])
    categorical = [f.name for f in spec.categorical_features]
    prepare = ColumnTransformer(
        [
            (
                "numbers",
                Pipeline(
                    [("impute", SimpleImputer()), ("clip", Clipper()), ("scale", StandardScaler())]
                ),
                numeric,
            ),
            ("categories", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    return Pipeline([("prepare", prepare), ("model", LogisticRegression(max_iter=1000))])


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, FeatureSpec]:
    frame, spec = history(6000, seed=4)
    return labelled_frame(frame, spec)[0], spec


@pytest.fixture(scope="module")
def fitted(data: tuple[pd.DataFrame, FeatureSpec]) -> Pipeline:
    frame, spec = data
    return pipeline(spec).fit(frame[spec.feature_names], frame[spec.target_column])


def saved(model: Any, directory: Path, name: str = "model.skops") -> Path:
    path = directory / name
    sio.dump(model, path)
    return path


def settings_in(directory: Path) -> TrainerSettings:
    return TrainerSettings(tracking_uri=f"sqlite:///{directory}/mlflow.db", data_dir=directory)


def test_an_undeclared_type_is_refused_by_name_and_loads_once_trusted(
    fitted: Pipeline, tmp_path: Path
) -> None:
    path = saved(fitted, tmp_path)
    with pytest.raises(OutsideModelRefused, match=rf"not trusted: {CLIPPER} .*--trust {CLIPPER}"):
        read_model(path)
    loaded = read_model(path, [CLIPPER])
    assert isinstance(loaded.named_steps["prepare"].transformers_[0][1][1], Clipper)
    with pytest.raises(OutsideModelRefused, match="is a pickle, which runs arbitrary code"):
        read_model(tmp_path / "model.pkl")
    with pytest.raises(OutsideModelRefused, match=r"takes module\.Class names"):
        read_model(path, ["not a type"])


def test_a_model_needing_a_column_the_spec_lacks_is_refused(
    data: tuple[pd.DataFrame, FeatureSpec], tmp_path: Path
) -> None:
    frame, spec = data
    wider = frame.assign(bureau_flag=1.0)
    columns = [*spec.feature_names, "bureau_flag"]
    model = pipeline(spec, ["bureau_flag"]).fit(wider[columns], wider[spec.target_column])
    settings = settings_in(tmp_path)
    with pytest.raises(OutsideModelRefused, match=r"needs columns \['bureau_flag'\] that spec"):
        register_outside(model, "m", spec, frame, settings, Registry(settings), [CLIPPER])
    assert Registry(settings).list_versions() == []  # nothing registered


def test_other_classes_and_no_data_for_an_uncalibrated_model_are_refused(
    data: tuple[pd.DataFrame, FeatureSpec], fitted: Pipeline, tmp_path: Path
) -> None:
    frame, spec = data
    settings = settings_in(tmp_path)
    registry = Registry(settings)
    words = frame[spec.target_column].map({0: "bad", 1: "good"})
    other = pipeline(spec).fit(frame[spec.feature_names], words)
    with pytest.raises(OutsideModelRefused, match=r"classes are \['bad', 'good'\]; LoanStream"):
        register_outside(other, "m", spec, frame, settings, registry)
    with pytest.raises(
        OutsideModelRefused, match=r"no --data given: .*outside-LogisticRegression is not calibr"
    ):
        register_outside(fitted, "m", spec, None, settings, registry, [CLIPPER])


def test_an_uncalibrated_custom_pipeline_is_calibrated_registered_and_loads_verified(
    data: tuple[pd.DataFrame, FeatureSpec], fitted: Pipeline, tmp_path: Path
) -> None:
    frame, spec = data
    settings = settings_in(tmp_path)
    registry = Registry(settings)
    version, chosen = register_outside(
        fitted, "model.skops", spec, frame, settings, registry, [CLIPPER]
    )
    assert chosen.method in ("sigmoid", "isotonic")
    assert isinstance(chosen.model, CalibratedClassifierCV)
    assert chosen.reason.startswith("not a CalibratedClassifierCV: calibrated (")
    assert version.metrics["auc"] > 0.7 and version.metrics["rows"] == 1500
    tags = registry.client.get_model_version(settings.model_name, version.version).tags
    assert tags["trusted_types"] == CLIPPER and tags["sha256"] == version.sha256

    loaded = registry.load(version.version)  # the declared type loads: the sha256 matched
    rows = frame[spec.feature_names].iloc[:50]
    assert np.array_equal(loaded.model.predict_proba(rows), chosen.model.predict_proba(rows))
    assert (loaded.bands.decline_below, loaded.bands.approve_from) == (0.5, 0.9)
    assert set(loaded.reference["features"]) == set(spec.feature_names)
    assert loaded.feature_names == spec.feature_names

    point_mlflow_at(settings.resolved_tracking_uri())
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(version.uri, dst_path=tmp))
        with pytest.raises(ModelRejected, match=rf"outside the trusted list: \['{CLIPPER}'\]"):
            load_model_file(local, None)  # unverified bytes: only LoanStream's own types
        with pytest.MonkeyPatch.context() as patch:
            patch.setitem(sys.modules, __name__, None)  # the owner's code is not installed here
            with pytest.raises(ModelRejected, match=rf"needs {__name__}, which cannot be imported"):
                load_model_file(local, version.sha256)


def test_the_command_refuses_without_trust_then_registers_and_promotes(
    data: tuple[pd.DataFrame, FeatureSpec], fitted: Pipeline, tmp_path: Path
) -> None:
    frame, _ = data
    model_file = saved(fitted, tmp_path)
    history_file = tmp_path / "history.parquet"
    frame.to_parquet(history_file)
    app = typer.Typer()
    register(app)
    env = {
        "LOANSTREAM_TRAINER_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "LOANSTREAM_TRAINER_DATA_DIR": str(tmp_path),
        "COLUMNS": "400",
    }
    args = ["model", "register", str(model_file), "--data", str(history_file)]
    refused = CliRunner().invoke(app, args, env=env)
    assert isinstance(refused.exception, OutsideModelRefused)
    assert CLIPPER in str(refused.exception)

    done = CliRunner().invoke(
        app, [*args, "--trust", CLIPPER, "--promote", "--no-publish"], env=env
    )
    assert done.exit_code == 0, done.output
    assert "Registered loan-repayment v1 (not a CalibratedClassifierCV: calibrated" in done.output
    assert "v1 is champion" in done.output
    champion = Registry(settings_in(tmp_path)).champion()
    assert champion is not None and champion.version == "1"


def test_a_model_from_an_mlflow_run_is_read_only_when_logged_with_skops(
    data: tuple[pd.DataFrame, FeatureSpec], fitted: Pipeline, tmp_path: Path
) -> None:
    frame, spec = data
    uri = f"sqlite:///{tmp_path}/runs.db"
    point_mlflow_at(uri)
    mlflow.set_experiment("elsewhere")
    with mlflow.start_run() as skops_run:
        mlflow.sklearn.log_model(
            fitted,
            name="model",
            serialization_format="skops",
            skops_trusted_types=[CLIPPER, "numpy.dtype"],
        )
    with mlflow.start_run() as pickle_run:
        mlflow.sklearn.log_model(fitted, name="model", serialization_format="cloudpickle")
    with pytest.raises(OutsideModelRefused, match="not a scikit-learn model logged in skops"):
        read_run_model(pickle_run.info.run_id, uri)  # never unpickled
    with pytest.raises(OutsideModelRefused, match=rf"not trusted: {CLIPPER}"):
        read_run_model(skops_run.info.run_id, uri)
    model = read_run_model(skops_run.info.run_id, uri, [CLIPPER])
    x = frame[spec.feature_names].head(50)
    np.testing.assert_array_equal(model.predict_proba(x), fitted.predict_proba(x))
