"""Promotion fails closed: only MLflow's "does not exist" means no champion (checked on a real
SQLite store); a registry that cannot answer stops the round before anything is promoted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from loanstream.contracts import ModelUpdate
from loanstream.models import is_absent
from tests.trainer_data import history
from trainer.data import labelled_frame
from trainer.pipeline import options_from, signed, training_round
from trainer.reference import reference_profile, typical_rows
from trainer.registry import Registry, RegistryError, input_example
from trainer.settings import TrainerSettings

FAST = {"candidates": ("logistic",), "search_candidates": 2}


class Locked:
    """An MLflow client whose champion look-ups fail once ``after`` of them have answered,
    with what MLflow 3 raises on a locked SQLite store (seen on a real lock: after the 20 s
    busy timeout MLflow sets, a TEMPORARILY_UNAVAILABLE MlflowException)."""

    def __init__(self, client: Any, after: int = 0) -> None:
        self.client, self.after, self.calls = client, after, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        self.calls += 1
        if self.calls > self.after:
            raise MlflowException(
                "(sqlite3.OperationalError) database is locked",
                error_code=TEMPORARILY_UNAVAILABLE,
            )
        return self.client.get_model_version_by_alias(name, alias)


def test_no_champion_only_when_the_model_or_its_alias_does_not_exist(tmp_path: Path) -> None:
    registry = Registry(TrainerSettings(data_dir=tmp_path))
    assert registry.champion() is None  # no registered model (RESOURCE_DOES_NOT_EXIST)
    registry.client.create_registered_model("loan-repayment")
    assert registry.champion() is None  # a model without the alias (INVALID_PARAMETER_VALUE)
    assert registry.list_versions() == []

    registry._client = Locked(registry.client)
    with pytest.raises(RegistryError, match="database is locked"):
        registry.champion()


@pytest.mark.parametrize(
    ("error", "absent"),
    [
        (RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no m"}), True),
        (
            RestException(
                {
                    "error_code": "INVALID_PARAMETER_VALUE",
                    "message": "Registered model alias champion not found.",
                }
            ),
            True,
        ),
        (RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad name"}), False),
        (RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "locked"}), False),
        (RestException({"error_code": "INTERNAL_ERROR", "message": "down"}), False),
        (ConnectionError("refused"), False),
    ],
)
def test_what_a_tracking_server_says_is_told_apart_the_same_way(
    error: Exception, absent: bool
) -> None:
    assert is_absent(error, "champion") is absent


def test_a_registry_locked_while_the_round_trained_registers_but_promotes_nothing(
    tmp_path: Path,
) -> None:
    frame, spec = history(2000, seed=5)
    good, _ = labelled_frame(frame, spec)
    settings = TrainerSettings(data_dir=tmp_path, min_rows=300)
    registry = Registry(settings)
    registry._client = Locked(registry.client, after=1)  # the look-up before training answers
    published: list[ModelUpdate] = []
    with pytest.raises(RegistryError, match="cannot read the champion of loan-repayment"):
        training_round(
            good, spec, settings, registry, options_from(settings, **FAST), published.append
        )
    assert published == []
    (version,) = Registry(settings).list_versions()
    assert version["aliases"] == []  # registered, never champion nor in shadow
    assert Registry(settings).champion() is None


def test_the_input_example_is_made_of_typical_values_not_of_rows() -> None:
    frame, spec = history(3000, seed=6)
    good, _ = labelled_frame(frame, spec)
    features = good[spec.feature_names]
    reference = reference_profile(features, spec, good[spec.target_column].to_numpy())
    rows = typical_rows(reference, spec)
    assert rows["loan_purpose"].tolist() == (
        features["loan_purpose"].value_counts().index[:3].tolist()
    )
    assert rows["credit_score"].tolist() == [
        round(features["credit_score"].quantile(q)) for q in (0.25, 0.5, 0.75)
    ]
    example = input_example(reference, spec, features.iloc[:200])
    assert example.dtypes.equals(features.dtypes)
    assert example.merge(features, how="inner").empty  # no row of the training frame


def test_model_updates_are_signed_with_the_configured_key() -> None:
    from loanstream.config import KafkaSettings
    from loanstream.signing import verify_update

    update = ModelUpdate(
        model_name="m", version="2", run_id="r", model_uri="models:/m/2", sha256="0" * 64
    )
    keyed = signed(KafkaSettings(model_update_key="secret"), update)
    assert keyed.signature is not None and verify_update(keyed, "secret")
    assert not verify_update(keyed, "another")
    assert signed(KafkaSettings(model_update_key=None), update) == update
