"""Scorer settings (env prefix ``LOANSTREAM_SCORER_``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings

from loanstream.config import default_data_dir, settings_config
from loanstream.timebounds import TimeWindowSettings
from loanstream.tracking import SharedTracking, resolve_tracking_uri


class ScorerSettings(BaseSettings, TimeWindowSettings, SharedTracking):
    model_config = settings_config("LOANSTREAM_SCORER_")

    app_id: str = Field(default="loanstream-scorer", description="Faust app id = consumer group")
    model_name: str = Field(default="loan-repayment", description="registered model it serves")
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI of the scorer alone, over MLFLOW_TRACKING_URI; with "
        "neither: sqlite:///<data_dir>/mlflow.db",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="local state, and the default MLflow store; default ~/.local/share/loanstream",
    )
    registry_poll_s: float = Field(
        default=30.0,
        gt=0,
        description="ask the MLflow registry for the champion this often (and at once on a "
        "ModelUpdate)",
    )
    batch_max: int = Field(
        default=500, ge=1, le=10_000, description="applications scored together at most"
    )
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
    reasons: bool = Field(
        default=True, description="give the principal reasons of each decline or review"
    )
    shadow: bool = Field(
        default=True,
        description="also score each batch with the registry's challenger (alias challenger) "
        "into loan.shadow-predictions; its predictions decide nothing",
    )
    max_message_bytes: int = Field(
        default=64 * 1024, ge=1024, description="a larger application is a dead letter, unread"
    )
    api_host: str = Field(
        default="127.0.0.1", description="any other than loopback needs api_key (or the opt-out)"
    )
    api_port: int | None = Field(default=8080, description="REST and /metrics; none: off")
    api_key: SecretStr | None = Field(
        default=None, description="required X-API-Key on /v1/* if set; never empty"
    )
    api_insecure_no_auth: bool = Field(
        default=False,
        description="serve /v1/* without a key on a host other than loopback (--insecure-no-auth)",
    )
    api_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="413 past this, chunked bodies included"
    )
    api_max_batch: int = Field(
        default=1000, ge=1, description="applications in one POST /v1/score (a list) at most"
    )
    api_max_concurrency: int = Field(
        default=4,
        ge=1,
        le=256,
        description="scorings at once, each in a worker thread; one more gets 429 at once",
    )
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

    @field_validator("api_key")
    @classmethod
    def _key_is_usable(cls, key: SecretStr | None) -> SecretStr | None:
        """An empty key would read as "keyed" while anyone could match it; a key with spaces or
        other than visible ASCII cannot be sent as a header unchanged, so no one could."""
        if key is None:
            return None
        value = key.get_secret_value()
        if not value:
            raise ValueError(
                "must not be empty; set a key, or unset it to serve without one (loopback only)"
            )
        bad = next((i for i, c in enumerate(value) if not "!" <= c <= "~"), None)
        if bad is not None:
            raise ValueError(
                "must be visible ASCII characters without spaces, got a space, control or "
                f"non-ASCII character at position {bad}"
            )
        return key

    @model_validator(mode="after")
    def _exposed_only_with_a_key(self) -> Self:
        """The API answers on a host other than loopback only with a key, or when told so."""
        if (
            self.api_port
            and self.api_key is None
            and not self.api_insecure_no_auth
            and not is_loopback(self.api_host)
        ):
            raise ValueError(
                f"the REST API on {self.api_host!r} would score for anyone who can reach it: "
                "set LOANSTREAM_SCORER_API_KEY, bind it to 127.0.0.1, ::1 or localhost, or "
                "opt out with --insecure-no-auth (LOANSTREAM_SCORER_API_INSECURE_NO_AUTH=true)"
            )
        return self

    def resolved_tracking_uri(self) -> str:
        return resolve_tracking_uri(self.tracking_uri, self.mlflow_tracking_uri, self.data_dir)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``: localhost or a loopback address.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "", "10.0.0.5")]
    [True, True, True, False, False, False]
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
