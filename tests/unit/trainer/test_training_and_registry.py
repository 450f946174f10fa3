"""Training on seeded data, and a real MLflow SQLite store in a temporary directory."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.preprocessing import FunctionTransformer

from loanstream.contracts import ModelUpdate
from loanstream.errors import LoanStreamError
from loanstream.models import ModelRejected, load_model_file, sha256_of
from tests.trainer_data import history
from trainer.data import labelled_frame, rows_to_train, time_split
from trainer.pipeline import options_from, training_round
from trainer.registry import BY_CLI, Registry
from trainer.settings import TrainerSettings
from trainer.train import train

FAST = {"candidates": ("logistic", "hgb"), "search_candidates": 2}


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    frame, spec = history(12_000, seed=3)
    good, dropped = labelled_frame(frame, spec)
    assert dropped == 0
    return good, spec


def test_the_split_respects_time(data) -> None:  # type: ignore[no-untyped-def]
    good, spec = data
    split = time_split(good, spec)
    t = spec.event_time_column
    assert split.train[t].max() < split.calibrate[t].min()
    assert split.calibrate[t].max() < split.validate[t].min()
    assert split.validate[t].max() < split.test[t].min()
    assert len(split.test) == int(len(good) * 0.15)


def test_training_is_reproducible_to_the_last_digit(data) -> None:  # type: ignore[no-untyped-def]
    good, spec = data
    settings = TrainerSettings(data_dir=Path("/nonexistent"))
    first = train(time_split(good, spec), spec, options_from(settings, **FAST))
    second = train(time_split(good, spec), spec, options_from(settings, **FAST))
    assert first.calibrated == second.calibrated
    assert first.name == second.name and first.params == second.params
    assert first.calibrated["ece"] < 0.04 and first.calibrated["auc"] > 0.8
    shuffled = train(
        time_split(good, spec), spec, options_from(settings, **FAST, shuffle_labels=True)
    )
    assert shuffled.calibrated["auc"] < 0.6


def test_a_window_just_above_the_smallest_allowed_trains(data) -> None:  # type: ignore[no-untyped-def]
    """The retrain window after a drift can be small; the search must fit what there is."""
    good, spec = data
    settings = TrainerSettings(data_dir=Path("/nonexistent"), min_rows=300)
    window = good.iloc[: rows_to_train(300)]
    result = train(time_split(window, spec), spec, options_from(settings, **FAST))
    assert result.calibrated["auc"] > 0.65  # 300 rows: well above chance, short of 12,000
    with pytest.raises(LoanStreamError, match="at least 300 labelled rows, got 299"):
        train(time_split(window.iloc[:-2], spec), spec, options_from(settings, **FAST))


def test_register_promote_refuse_a_worse_challenger_and_load_verified(
    data,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    good, spec = data
    settings = TrainerSettings(data_dir=tmp_path)
    registry = Registry(settings)
    published: list[ModelUpdate] = []
    first = training_round(
        good, spec, settings, registry, options_from(settings, **FAST), published.append
    )
    assert first.promoted and first.reason == "no champion yet"
    assert [u.version for u in published] == [first.version.version]
    assert published[0].sha256 == first.version.sha256
    assert (first.report_dir / "model_card.html").read_text().count("<img") == 4

    worse = training_round(
        good,
        spec,
        settings,
        registry,
        options_from(settings, **FAST, shuffle_labels=True),
        published.append,
    )
    assert not worse.promoted and "below the margin" in worse.reason
    assert len(published) == 1  # nothing published for the worse one
    versions = {v["version"]: v for v in registry.list_versions()}
    assert versions[first.version.version]["aliases"] == ["champion"]
    assert versions[worse.version.version]["aliases"] == []  # a loser is not put in shadow

    loaded = registry.load()
    assert loaded.version == first.version.version
    assert loaded.bands.approve_from == 0.9
    assert set(loaded.reference["features"]) == set(spec.feature_names)
    p = loaded.model.predict_proba(good[spec.feature_names].iloc[:5])[:, 1]
    assert np.all((p > 0) & (p < 1))
    with pytest.raises(ModelRejected, match=r"sha256 is .* expected 0+: refusing to load it"):
        registry.load(first.version.version, expected_sha256="0" * 64)

    def promoted_by(version: str) -> str | None:
        return registry.client.get_model_version(settings.model_name, version).tags.get(
            "promoted_by"
        )

    assert promoted_by(first.version.version) == "trainer"
    assert promoted_by(worse.version.version) is None
    registry.promote(worse.version.version, "by hand, for the rollback drill", BY_CLI)
    assert promoted_by(worse.version.version) == "cli"
    assert registry.champion().version == worse.version.version  # type: ignore[union-attr]
    assert registry.rollback().version == first.version.version
    assert registry.champion().version == first.version.version  # type: ignore[union-attr]
    assert promoted_by(first.version.version) == "rollback"  # the scorer takes it though lower

    example = stored_input_example(first.version.uri, tmp_path / "example")
    assert list(example.columns) == spec.feature_names and len(example) == 3
    assert example.merge(good[spec.feature_names], how="inner").empty  # no applicant's row


def stored_input_example(uri: str, directory: Path) -> pd.DataFrame:
    """The input example MLflow keeps with a registered model, as anyone reading it sees it."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(directory)))
    example = json.loads((local / "input_example.json").read_text())
    return pd.DataFrame(example["data"], columns=example["columns"])


def test_a_model_file_with_an_untrusted_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    sio.dump(FunctionTransformer(func=print), path)
    with pytest.raises(
        ModelRejected, match=r"types outside the trusted list: \['builtins.print'\]"
    ):
        load_model_file(tmp_path, sha256_of(path))
