"""Monitor settings (env prefix ``LOANSTREAM_MONITOR_``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from loanstream.config import default_data_dir, settings_config
from loanstream.retraining import TRIGGER_SIGNALS, Trigger
from loanstream.timebounds import TimeWindowSettings
from loanstream.tracking import SharedTracking, resolve_tracking_uri
from monitor.pipeline import PipelineConfig


class MonitorSettings(BaseSettings, TimeWindowSettings, SharedTracking):
    model_config = settings_config("LOANSTREAM_MONITOR_")

    app_id: str = Field(default="loanstream-monitor", description="Faust app id = consumer group")
    model_name: str = Field(default="loan-repayment", description="registered model it watches")
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI of the monitor alone, over MLFLOW_TRACKING_URI; with "
        "neither: sqlite:///<data_dir>/mlflow.db",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="detector state, default MLflow store; default "
        "~/.local/share/loanstream",
    )
    label_ttl_days: float = Field(
        default=400.0, gt=0, description="a prediction waits this long (event time) for a label"
    )
    label_clock_step_days: float = Field(
        default=1.0,
        gt=0,
        description="the label clock moves at most this far per outcome (one outcome dated "
        "9999-12-31 would otherwise expire every pending prediction)",
    )
    orphan_ttl_s: float = Field(
        default=600.0, gt=0, description="an outcome waits this long for its prediction"
    )
    shadow_window: int = Field(
        default=5000,
        ge=1,
        description="labelled rows per count window of a shadow model (and of the paired rows)",
    )
    shadow_window_step: int = Field(
        default=1000, ge=1, description="a shadow count window closes every this many rows"
    )
    drift_window: int = Field(
        default=2000, ge=100, description="labelled events per window of data and prediction drift"
    )
    drift_step: int = Field(
        default=500, ge=10, description="the drift windows are compared every this many events"
    )
    target_run_length: int = Field(
        default=10_000_000,
        ge=1000,
        description="the label test's threshold is simulated under the model's reference "
        "predictions for about one false alarm per this many labelled events, over all its tests",
    )
    min_psi: float = Field(
        default=0.1, ge=0, description="data drift is reported only at or above this PSI"
    )
    cooldown_days: float = Field(
        default=14.0, ge=0, description="at most one retrain request per cooldown (event time)"
    )
    retrain_trigger: Trigger = Field(
        default=Trigger.ANY,
        description="which confirmed drifts ask for a retrain: any, performance (concept drift, "
        "overall or in a region) or never",
    )
    state_every_s: float = Field(
        default=2.0, gt=0, description="snapshot detector state (and refresh gauges) this often"
    )
    metrics_port: int | None = Field(default=8002, description="Prometheus /metrics; none: off")
    session_timeout_s: float = Field(
        default=10.0, gt=1, description="a dead worker's partitions move to the others after this"
    )
    max_poll_interval_s: float = Field(default=120.0, gt=1, description="longest batch allowed")
    model_wait_s: float = Field(default=120.0, gt=0, description="wait this long for a model")
    registry_poll_s: float = Field(
        default=30.0,
        gt=0,
        description="ask the MLflow registry for the champion this often (and at once on a "
        "ModelUpdate)",
    )

    @model_validator(mode="after")
    def _shadow_windows_fit(self) -> MonitorSettings:
        if self.shadow_window % self.shadow_window_step:
            raise ValueError(
                "shadow_window must be a multiple of shadow_window_step, got "
                f"{self.shadow_window} and {self.shadow_window_step}"
            )
        return self

    def resolved_tracking_uri(self) -> str:
        return resolve_tracking_uri(self.tracking_uri, self.mlflow_tracking_uri, self.data_dir)

    def pipeline(self) -> PipelineConfig:
        return PipelineConfig(
            drift_window=self.drift_window,
            drift_step=self.drift_step,
            target_run_length=self.target_run_length,
            min_psi=self.min_psi,
            cooldown=timedelta(days=self.cooldown_days),
            retrain_on=TRIGGER_SIGNALS[self.retrain_trigger],
        )
