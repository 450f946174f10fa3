"""`loanstream score FILE` and `loanstream.score(frame)`: every row of the file comes out, in
order, scored by the registry's champion as the stream scores it, or with the reason it was
refused; checked against a real SQLite registry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from typer.testing import CliRunner

import loanstream
from loanstream.errors import LoanStreamError
from loanstream.spec import FeatureSpec
from loanstream.validation import ApplicationValidator
from scorer.cli import register
from scorer.core import score_batch
from scorer.files import serving_model
from scorer.settings import ScorerSettings
from tests.trainer_data import history
from trainer.data import labelled_frame
from trainer.outside import register_outside
from trainer.registry import BY_CLI, Registry
from trainer.settings import TrainerSettings


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry whose champion v1 is a calibrated logistic pipeline."""
    directory = tmp_path_factory.mktemp("registry")
    frame, spec = history(4000, seed=5)
    good = labelled_frame(frame, spec)[0]
    numeric = [f.name for f in spec.numeric_features]
    categorical = [f.name for f in spec.categorical_features]
    prepare = ColumnTransformer(
        [
            (
                "n",
                Pipeline([("i", SimpleImputer(strategy="median")), ("s", StandardScaler())]),
                numeric,
            ),
            ("c", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    model = CalibratedClassifierCV(Pipeline([("p", prepare), ("m", LogisticRegression())]))
    model.fit(good[spec.feature_names], good[spec.target_column])
    settings = TrainerSettings(tracking_uri=f"sqlite:///{directory}/mlflow.db", data_dir=directory)
    registry = Registry(settings)
    version, _ = register_outside(model, "test", spec, good, settings, registry, max_ece=1.0)
    registry.promote(version.version, "test", BY_CLI)
    return directory


def applications_file(tmp_path: Path) -> tuple[Path, pd.DataFrame, FeatureSpec]:
    frame, spec = history(40, seed=9)
    rows = frame[[spec.id_column, spec.event_time_column, *spec.feature_names]].copy()
    rows[spec.event_time_column] = rows[spec.event_time_column].map(lambda t: t.isoformat())
    rows["credit_score"] = rows["credit_score"].astype(object)
    rows.loc[3, "credit_score"] = 9999
    rows.loc[17, "loan_purpose"] = "yacht"
    rows.loc[30, "income"] = None
    path = tmp_path / "applications.csv"
    rows.to_csv(path, index=False)
    return path, rows, spec


def stream_predictions(settings: ScorerSettings, rows: pd.DataFrame, spec: FeatureSpec) -> dict:
    """What the stream gives the same rows: each validated as a message, then score_batch."""
    validator = ApplicationValidator(spec)
    apps = []
    for record in rows.to_dict("records"):
        features = {n: record[n] for n in spec.feature_names if not pd.isna(record[n])}
        try:
            apps.append(
                validator.validate(
                    {
                        "application_id": record[spec.id_column],
                        "event_time": record[spec.event_time_column],
                        "features": features,
                    }
                )
            )
        except LoanStreamError:
            continue
    now = datetime.now(UTC)
    model = serving_model(settings)
    return {p.application_id: p for p in score_batch(model, apps, now, now)}


def test_a_file_is_scored_as_the_stream_scores_it_and_invalid_rows_stay(
    registry_dir: Path, tmp_path: Path
) -> None:
    path, rows, spec = applications_file(tmp_path)
    out = tmp_path / "scores.csv"
    app = typer.Typer()
    register(app)
    env = {
        "LOANSTREAM_SCORER_TRACKING_URI": f"sqlite:///{registry_dir}/mlflow.db",
        "COLUMNS": "400",
    }
    result = CliRunner().invoke(app, ["score", str(path), "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "40 rows: 37 scored by loan-repayment v1, 3 invalid" in result.output

    scores = pd.read_csv(out)
    text = ["reasons", "reason_text", "error"]
    scores[text] = scores[text].fillna("")  # CSV keeps no difference between "" and missing
    assert list(scores.columns) == [
        "application_id",
        "probability",
        "decision",
        "reasons",
        "reason_text",
        "model_version",
        "error",
    ]
    assert scores["application_id"].tolist() == rows["application_id"].tolist()  # file order
    assert (scores["model_version"] == 1).all()
    invalid = scores[scores["error"] != ""]
    assert invalid.index.tolist() == [3, 17, 30]
    assert invalid["probability"].isna().all()
    assert "credit_score must be within [300, 850], got 9999" in invalid.loc[3, "error"]
    assert invalid.loc[17, "error"].startswith("out_of_range: features.loan_purpose must be one of")
    assert "features.income" in invalid.loc[30, "error"]

    settings = ScorerSettings(tracking_uri=env["LOANSTREAM_SCORER_TRACKING_URI"])
    stream = stream_predictions(settings, rows, spec)
    valid = scores[scores["error"] == ""]
    assert len(stream) == len(valid) == 37
    for row in valid.itertuples():
        expected = stream[row.application_id]
        assert row.probability == pytest.approx(expected.probability, abs=1e-12)
        assert row.decision == expected.decision.value
        names = ", ".join(r.feature for r in expected.reasons)
        words = " | ".join(r.text or r.feature for r in expected.reasons)
        assert (row.reasons, row.reason_text) == (names, words)
    assert (valid["reasons"] != "").sum() > 5  # declines and reviews come with their reasons
    assert set(valid["decision"]) <= {"approve", "review", "decline"}
    tally = valid["decision"].value_counts()
    assert (
        ", ".join(
            f"{tally.get(d, 0):,} {d} ({tally.get(d, 0) / 37:.1%})"
            for d in ("approve", "review", "decline")
        )
        in result.output
    )


def test_score_in_python_gives_the_same_frame_and_names_a_missing_version(
    registry_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, rows, spec = applications_file(tmp_path)
    monkeypatch.setenv("LOANSTREAM_SCORER_TRACKING_URI", f"sqlite:///{registry_dir}/mlflow.db")
    scored = loanstream.score(rows)
    assert scored["application_id"].tolist() == rows["application_id"].tolist()
    assert scored.loc[3, "error"].startswith("out_of_range: features.credit_score")
    assert np.isnan(scored.loc[3, "probability"])
    model = serving_model(ScorerSettings())
    good = scored[scored["error"] == ""]
    frame = rows.loc[good.index, spec.feature_names].astype({"credit_score": float})
    expected = model.model.predict_proba(frame)[:, 1]
    assert np.allclose(good["probability"].to_numpy(), expected, atol=1e-12, rtol=0)
    with pytest.raises(LoanStreamError, match="model loan-repayment has no version 7 in"):
        loanstream.score(rows, model_version="7")
