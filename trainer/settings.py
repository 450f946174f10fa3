"""Trainer settings (env prefix ``LOANSTREAM_TRAINER_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from loanstream.config import default_data_dir, settings_config
from loanstream.tracking import SharedTracking, resolve_tracking_uri, sqlite_file


class TrainerSettings(BaseSettings, SharedTracking):
    model_config = settings_config("LOANSTREAM_TRAINER_")

    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI of the trainer alone, over MLFLOW_TRACKING_URI; with "
        "neither: sqlite:///<data_dir>/mlflow.db (artifacts in <data_dir>/mlartifacts)",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="default MLflow store and artifacts; default ~/.local/share/loanstream",
    )
    experiment: str = Field(default="loanstream", description="MLflow experiment of the runs")
    model_name: str = Field(default="loan-repayment", description="registered model it trains")
    seed: int = Field(default=0, description="random seed of splits and searches")
    search_candidates: int = Field(
        default=6, ge=1, description="hyperparameter draws per model family (halving search)"
    )
    candidates: tuple[str, ...] = Field(
        default=("logistic", "hgb", "forest"), description="model families tried each round"
    )
    cost_wrong_approval: float = Field(
        default=5.0, gt=0, description="cost of approving a defaulter; sets the decision bands"
    )
    cost_wrong_decline: float = Field(
        default=1.0, gt=0, description="cost of declining a good payer; sets the decision bands"
    )
    cost_review: float = Field(
        default=0.5, ge=0, description="cost of a manual review; sets the decision bands"
    )
    primary_metric: str = Field(
        default="auc",
        pattern="^(auc|log_loss|brier)$",
        description="holdout metric a challenger must beat the champion on: auc, log_loss, brier",
    )
    promotion_margin: float = Field(
        default=0.002, ge=0, description="the challenger's gain on primary_metric must reach this"
    )
    calibration_tolerance: float = Field(
        default=0.005, ge=0, description="the challenger's ECE may exceed the champion's by this"
    )
    recent_window_days: float = Field(
        default=90.0, gt=0, description="newest days a retrain request without a window trains on"
    )
    min_rows: int = Field(
        default=2000, ge=100, description="labelled rows a round needs before it trains"
    )
    wait_for_rows_s: float = Field(
        default=600.0,
        ge=0,
        description="how long a request whose window is still too short waits for labelled rows",
    )
    retry_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="rounds per drift, the first included, while its challengers lose",
    )
    drill_losing_rounds: int = Field(
        default=0,
        ge=0,
        description="drill: the first N retrain rounds train on shuffled labels, so their "
        "challengers lose (to see the retry policy work)",
    )
    rows_poll_s: float = Field(default=5.0, gt=0, description="how often it looks again")
    max_window_days: float = Field(
        default=365.0,
        gt=0,
        description="longest event-time window a round trains on: a request naming a longer "
        "one is refused, an open-ended one keeps the newest this many days",
    )
    max_future_days: float = Field(
        default=1.0,
        ge=0,
        description="a request whose window starts or ends further than this past now is "
        "refused (clock skew allowed for, a far-future time is not)",
    )
    max_training_rows: int = Field(
        default=500_000,
        ge=1000,
        description="labelled rows a round holds in memory at most: the newest of its window",
    )
    max_request_bytes: int = Field(
        default=64 * 1024, ge=1024, description="a larger retrain request is refused unread"
    )
    registry_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="tries of a round that failed because the registry did not answer, "
        "before its requests go to the dead-letter topic",
    )
    registry_retry_s: float = Field(
        default=30.0, ge=0, description="pause before a round the registry failed is tried again"
    )
    broker_check_s: float = Field(
        default=3.0,
        gt=0,
        description="how long `loanstream train` and `model promote|rollback` wait for a broker "
        "before saying the scorers will find the champion in the registry",
    )
    promotion_policy: Literal["immediate", "shadow"] = Field(
        default="immediate",
        description="immediate: a challenger that wins on the holdout is champion at once; "
        "shadow: it becomes the registry's challenger, scores live traffic beside the "
        "champion, and is promoted only once shared live outcomes show it ahead",
    )
    shadow_check_s: float = Field(
        default=30.0, gt=0, description="how often the trainer judges the challenger in shadow"
    )
    shadow_min_outcomes: int = Field(
        default=2000,
        ge=10,
        description="live applications both models scored, with an outcome, before a verdict "
        "(at 500, a perfectly calibrated model's measured ECE over 15 bins was often 0.06-0.08, "
        "above the default bound)",
    )
    shadow_auc_margin: float = Field(
        default=0.0, description="the challenger's live AUC must reach the champion's plus this"
    )
    shadow_ece_bound: float = Field(
        default=0.05, ge=0, le=1, description="the challenger's live ECE must be at most this"
    )
    shadow_max_rows: int = Field(
        default=200_000,
        ge=100,
        description="records a verdict reads at most from each of loan.shadow-predictions and "
        "loan.labelled",
    )
    metrics_port: int | None = Field(default=None, description="Prometheus /metrics; none: off")

    @model_validator(mode="after")
    def _rows_fit_in_memory(self) -> TrainerSettings:
        from trainer.data import rows_to_train

        if self.max_training_rows < rows_to_train(self.min_rows):
            raise ValueError(
                f"max_training_rows must hold a window of min_rows={self.min_rows} "
                f"({rows_to_train(self.min_rows)} rows), got {self.max_training_rows}"
            )
        return self

    def resolved_tracking_uri(self) -> str:
        uri = resolve_tracking_uri(self.tracking_uri, self.mlflow_tracking_uri, self.data_dir)
        database = sqlite_file(uri)
        if database is not None:  # SQLite makes the file, not its folder
            database.parent.mkdir(parents=True, exist_ok=True)
        return uri

    @property
    def artifact_root(self) -> Path:
        return self.data_dir.resolve() / "mlartifacts"  # MLflow wants an absolute file URI
