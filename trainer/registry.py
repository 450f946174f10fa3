"""MLflow tracking and registry: log a training run with its artifacts, register the model
(skops, explicit trusted types), manage the ``champion`` and ``challenger`` aliases, and load a
version back only if its sha256 matches and it holds nothing outside the trusted types.

Promotion fails closed: only MLflow's answer that the model or its alias does not exist means
"no champion"; any other failure to read the registry (a locked database, a server down) is a
:class:`RegistryError`, and a round that meets one promotes nothing. Each promotion tags its
version with who made it (``promoted_by``: trainer, cli or rollback), since the scorer takes a
lower version than it serves only from a rollback.

A registered version is no challenger by itself: the ``challenger`` alias marks the one version
in shadow (scored beside the champion on live traffic, decided by trainer.shadow), set by a round
under the ``shadow`` promotion policy or by ``loanstream model shadow``, and tagged with when
(``shadow_since``) so that the verdict reads only what was scored since."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from loanstream.contracts import ModelUpdate
from loanstream.errors import LoanStreamError
from loanstream.models import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    MODEL_FILE,
    TRUSTED_KEY,
    TRUSTED_TYPES,
    LoadedModel,
    download_and_load,
    is_absent,
    sha256_of,
)
from loanstream.spec import FeatureSpec
from loanstream.tracking import point_mlflow_at, serves_artifacts
from trainer.reference import typical_rows
from trainer.settings import TrainerSettings
from trainer.train import TrainingResult

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER = CHAMPION_ALIAS, CHALLENGER_ALIAS
PROMOTED_BY = "promoted_by"
BY_TRAINER, BY_CLI, BY_ROLLBACK, BY_SHADOW = "trainer", "cli", "rollback", "shadow"
SHADOW_SINCE = "shadow_since"


class RegistryError(LoanStreamError):
    """The registry did not answer (locked, unreachable, failing): nothing may be promoted on
    what it would have said. A round that meets one is tried again later."""


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    sha256: str
    metrics: dict[str, float]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def update(self) -> ModelUpdate:
        return ModelUpdate(
            model_name=self.name,
            version=self.version,
            run_id=self.run_id,
            model_uri=self.uri,
            sha256=self.sha256,
            metrics={k: float(v) for k, v in self.metrics.items()},
        )


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def data_fingerprint(frame: pd.DataFrame, spec: FeatureSpec) -> dict[str, str]:
    columns = [spec.id_column, spec.event_time_column, *spec.feature_names, spec.target_column]
    hashed = pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()
    times = pd.to_datetime(frame[spec.event_time_column], utc=True)
    return {
        "data_rows": str(len(frame)),
        "data_start": times.min().isoformat(),
        "data_end": times.max().isoformat(),
        "data_sha256": hashlib.sha256(hashed.tobytes()).hexdigest(),
        "spec_name": spec.name,
        "spec_sha256": spec.fingerprint,
    }


def requirements() -> list[str]:
    """What a registered model needs to load, pinned to the versions that trained it."""
    from importlib.metadata import version

    return [
        f"{package}=={version(package)}" for package in ("scikit-learn", "skops", "numpy", "pandas")
    ]


def input_example(
    reference: dict[str, Any], spec: FeatureSpec, sample: pd.DataFrame
) -> pd.DataFrame:
    """The model's MLflow input example: typical values, no applicant's row (MLflow keeps the
    example with every version, readable by whoever reads the registry), with ``sample``'s
    column types so that it matches the signature."""
    return typical_rows(reference, spec).astype(sample.dtypes.to_dict())


@dataclass(frozen=True)
class Shadowing:
    """The challenger in shadow: its version, when it was put there, and its version tags."""

    version: RegisteredVersion
    since: datetime
    tags: dict[str, str]


class Registry:
    """The MLflow side of the trainer. Nothing connects until a method needs it."""

    def __init__(self, settings: TrainerSettings) -> None:
        self.settings = settings
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            import mlflow
            from mlflow import MlflowClient

            uri = self.settings.resolved_tracking_uri()
            point_mlflow_at(uri)
            self._client = MlflowClient(uri)
            experiment = self._client.get_experiment_by_name(self.settings.experiment)
            if experiment is None:
                self._client.create_experiment(
                    self.settings.experiment, artifact_location=self._artifact_location(uri)
                )
            elif serves_artifacts(uri) and experiment.artifact_location.startswith("file:"):
                logger.warning(
                    "experiment %s on %s keeps its artifacts at %s, a path only its own host "
                    "reads: scorers elsewhere cannot download its models (name a new "
                    "LOANSTREAM_TRAINER_EXPERIMENT to get server-side artifacts)",
                    self.settings.experiment,
                    uri,
                    experiment.artifact_location,
                )
            mlflow.set_experiment(self.settings.experiment)
        return self._client

    def _artifact_location(self, tracking_uri: str) -> str | None:
        """Where a new experiment keeps its artifacts: a tracking server's own store (None: its
        ``mlflow-artifacts:/`` default, served to every host), else a folder in the data dir."""
        if serves_artifacts(tracking_uri):
            return None
        self.settings.artifact_root.mkdir(parents=True, exist_ok=True)
        return self.settings.artifact_root.as_uri()

    def log(
        self,
        result: TrainingResult,
        spec: FeatureSpec,
        train_frame: pd.DataFrame,
        tags: dict[str, str],
        trusted: tuple[str, ...] = (),
    ) -> RegisteredVersion:
        """Track the run (params, metrics, fingerprint, artifacts) and register the model;
        ``trusted``: types beyond TRUSTED_TYPES that its owner declared (trainer.outside)."""
        import mlflow
        from mlflow.models import infer_signature

        client = self.client
        name = self.settings.model_name
        sample = train_frame[spec.feature_names].iloc[:200]
        metadata = {
            "bands": result.bands.as_dict(),
            "reference": result.reference,
            "spec_sha256": spec.fingerprint,
            "feature_names": spec.feature_names,
            **({TRUSTED_KEY: list(trusted)} if trusted else {}),
        }
        with mlflow.start_run(run_name=f"{result.name}-{result.calibration}") as run:
            mlflow.log_params(
                {
                    "model": result.name,
                    "calibration": result.calibration,
                    **{k.removeprefix("model__"): v for k, v in result.params.items()},
                    **{f"band_{k}": v for k, v in result.bands.as_dict().items()},
                }
            )
            mlflow.log_metrics({f"test_{k}": v for k, v in result.calibrated.items()})
            mlflow.log_metrics(
                {f"test_uncalibrated_{k}": v for k, v in result.uncalibrated.items()}
            )
            for candidate in result.candidates:
                mlflow.log_metrics(
                    {f"validation_{candidate.name}_{k}": v for k, v in candidate.validation.items()}
                )
            mlflow.set_tags(
                {**data_fingerprint(train_frame, spec), "git_commit": _git_commit(), **tags}
            )
            info = mlflow.sklearn.log_model(
                result.model,
                name="model",
                serialization_format="skops",
                skops_trusted_types=[*TRUSTED_TYPES, *trusted],
                registered_model_name=name,
                # Named, not inferred: inferring runs a Python that loads the model to see what
                # it imports, 40 s of a retrain on this machine under load.
                pip_requirements=requirements(),
                signature=infer_signature(sample, result.model.predict_proba(sample)),
                input_example=input_example(result.reference, spec, sample),
                metadata=metadata,
            )
            version = str(info.registered_model_version)
        sha = self._sha256(name, version)
        client.set_model_version_tag(name, version, "sha256", sha)
        return RegisteredVersion(
            name, version, run.info.run_id, sha, {k: float(v) for k, v in result.calibrated.items()}
        )

    def attach_report(self, run_id: str, directory: Path) -> None:
        self.client.log_artifacts(run_id, str(directory), artifact_path="report")

    def _sha256(self, name: str, version: str) -> str:
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{name}/{version}", dst_path=tmp
                )
            )
            return sha256_of(local / MODEL_FILE)

    def version(self, version: str) -> RegisteredVersion:
        client = self.client
        name = self.settings.model_name
        found = client.get_model_version(name, version)
        run = client.get_run(found.run_id)
        metrics = {
            k.removeprefix("test_"): v
            for k, v in run.data.metrics.items()
            if k.startswith("test_") and not k.startswith("test_uncalibrated_")
        }
        return RegisteredVersion(
            name, str(found.version), found.run_id, found.tags.get("sha256", ""), metrics
        )

    def champion(self) -> RegisteredVersion | None:
        """The champion, None when there is none yet; :class:`RegistryError` when the registry
        cannot tell (a promotion decided on "none" would skip the comparison)."""
        try:
            found = self.client.get_model_version_by_alias(self.settings.model_name, CHAMPION)
            if found is None:
                raise RegistryError("the registry answered with no model version")
            return self.version(str(found.version))
        except RegistryError:
            raise
        except Exception as err:
            if is_absent(err, CHAMPION):
                return None
            raise RegistryError(
                f"cannot read the champion of {self.settings.model_name} from "
                f"{self.settings.resolved_tracking_uri()}: {type(err).__name__}: {err}"
            ) from err

    def promote(self, version: str, reason: str, by: str = BY_TRAINER) -> RegisteredVersion:
        """Make ``version`` the champion, tagged with why and by whom (trainer, cli, rollback).

        The tags are set before the alias moves: a scorer that sees the new champion reads
        who promoted it, and a lower version is taken only from a rollback.
        """
        client = self.client
        name = self.settings.model_name
        chosen = self.version(version)
        tags = {
            "champion_since": datetime.now(UTC).isoformat(),
            "promotion_reason": reason,
            PROMOTED_BY: by,
        }
        for key, value in tags.items():
            client.set_model_version_tag(name, chosen.version, key, value)
        client.set_registered_model_alias(name, CHAMPION, chosen.version)
        aliases = client.get_registered_model(name).aliases
        if str(aliases.get(CHALLENGER)) == chosen.version:  # a challenger no more
            client.delete_registered_model_alias(name, CHALLENGER)
        return chosen

    def shadow(self, version: str, tags: dict[str, str] | None = None) -> Shadowing:
        """Put ``version`` in shadow: it becomes the challenger (replacing any other), tagged
        with the time from which its shadow predictions count. The champion cannot shadow."""
        client = self.client
        name = self.settings.model_name
        chosen = self.version(version)
        if not chosen.sha256:
            raise LoanStreamError(f"{name} v{version} has no sha256 recorded: it cannot shadow")
        champion = self.champion()
        if champion is not None and champion.version == chosen.version:
            raise LoanStreamError(f"{name} v{version} is the champion: it cannot shadow itself")
        since = datetime.now(UTC)
        for key, value in {**(tags or {}), SHADOW_SINCE: since.isoformat()}.items():
            client.set_model_version_tag(name, chosen.version, key, value[:5000])
        client.set_registered_model_alias(name, CHALLENGER, chosen.version)
        return Shadowing(chosen, since, tags or {})

    def challenger(self) -> Shadowing | None:
        """The version in shadow and since when, None when there is none;
        :class:`RegistryError` when the registry cannot tell."""
        name = self.settings.model_name
        try:
            found = self.client.get_model_version_by_alias(name, CHALLENGER)
        except Exception as err:
            if is_absent(err, CHALLENGER):
                return None
            raise RegistryError(f"cannot read the challenger of {name}: {err}") from err
        tags = dict(found.tags)
        since = tags.get(SHADOW_SINCE)
        when = (
            datetime.fromisoformat(since)
            if since
            else datetime.fromtimestamp(found.last_updated_timestamp / 1000, UTC)
        )
        return Shadowing(self.version(str(found.version)), when, tags)

    def clear_challenger(self) -> str | None:
        """Take the challenger alias away (no shadow); the version it named, if any."""
        current = self.challenger()
        if current is None:
            return None
        self.client.delete_registered_model_alias(self.settings.model_name, CHALLENGER)
        return current.version.version

    def rollback(self) -> RegisteredVersion:
        """Make the previous champion champion again."""
        current = self.champion()
        earlier = [
            v
            for v in self.list_versions()
            if v["champion_since"] and (current is None or v["version"] != current.version)
        ]
        if not earlier:
            raise LoanStreamError("no earlier champion to roll back to")
        previous = max(earlier, key=lambda v: v["champion_since"])
        return self.promote(
            previous["version"], f"rollback from {current.version if current else '-'}", BY_ROLLBACK
        )

    def list_versions(self) -> list[dict[str, Any]]:
        client = self.client
        name = self.settings.model_name
        try:
            aliases = client.get_registered_model(name).aliases
        except Exception as err:
            if is_absent(err):
                return []
            raise RegistryError(f"cannot list the versions of {name}: {err}") from err
        rows = []
        for v in client.search_model_versions(f"name='{name}'"):
            run = client.get_run(v.run_id)
            rows.append(
                {
                    "version": str(v.version),
                    "aliases": sorted(
                        a for a, ver in aliases.items() if str(ver) == str(v.version)
                    ),
                    "model": run.data.params.get("model", ""),
                    "auc": run.data.metrics.get("test_auc"),
                    "ece": run.data.metrics.get("test_ece"),
                    "rows": run.data.tags.get("data_rows", ""),
                    "champion_since": v.tags.get("champion_since", ""),
                    "reason": v.tags.get(
                        "promotion_reason",
                        v.tags.get("rejection_reason", v.tags.get("shadow_reason", "")),
                    ),
                    "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(),
                }
            )
        return sorted(rows, key=lambda r: int(r["version"]))

    def tag_version(self, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(self.settings.model_name, version, key, value)

    def load(self, version: str | None = None, expected_sha256: str | None = None) -> LoadedModel:
        """Load ``version`` (default: the champion), verified against its recorded sha256."""
        chosen = self.version(version) if version else self.champion()
        if chosen is None:
            raise LoanStreamError(f"model {self.settings.model_name} has no champion yet")
        return download_and_load(
            chosen.uri,
            self.settings.resolved_tracking_uri(),
            expected_sha256 or chosen.sha256,
            chosen.name,
            chosen.version,
        )
