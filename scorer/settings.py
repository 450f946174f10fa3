"""Scorer settings (env prefix ``LOANSTREAM_SCORER_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from loanstream.config import default_data_dir


class ScorerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOANSTREAM_SCORER_", extra="ignore")

    app_id: str = Field(default="loanstream-scorer", description="Faust app id = consumer group")
    model_name: str = "loan-repayment"
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default sqlite:///<data_dir>/mlflow.db"
    )
    data_dir: Path = Field(default_factory=default_data_dir)
    batch_max: int = Field(default=500, ge=1, le=10_000)
    batch_within_s: float = Field(
        default=0.005, gt=0, le=5, description="wait this long for a batch to fill (after one)"
    )
    bulk_take: bool = Field(
        default=True,
        description="take batches from the stream's queue at once (loanstream.bulk); "
        "false: Faust's noack_take",
    )
    fetch_min_bytes: int = Field(
        default=32 * 1024,
        ge=1,
        description="bytes a fetch of applications waits for (or fetch_max_wait_ms); Faust's 1 "
        "made a fetch per dozen records, a third of the scorer's CPU at 2,000/s",
    )
    fetch_max_wait_ms: int = Field(
        default=10,
        ge=0,
        le=60_000,
        description="the longest a fetch waits for fetch_min_bytes (Faust's: 1,500 ms); it "
        "bounds the latency the batching adds",
    )
    reasons: bool = True
    max_message_bytes: int = Field(default=64 * 1024, ge=1024)
    api_host: str = "127.0.0.1"
    api_port: int | None = Field(default=8080, description="REST and /metrics; none: off")
    api_key: SecretStr | None = Field(default=None, description="required X-API-Key if set")
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    api_max_batch: int = Field(default=1000, ge=1)
    session_timeout_s: float = Field(
        default=10.0, gt=1, description="a dead worker's partitions move to the others after this"
    )
    max_poll_interval_s: float = Field(default=120.0, gt=1, description="longest batch allowed")
    loader_niceness: int = Field(
        default=5,
        ge=0,
        le=19,
        description="nice level of the process that loads a new model (19: only idle CPU)",
    )
    model_wait_s: float = Field(default=120.0, gt=0, description="wait this long for a model")

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.data_dir / 'mlflow.db'}"
