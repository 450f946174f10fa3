"""Settings, read from the environment once in each entry point (pydantic-settings).

Each service has its own settings class with its own env prefix; the Kafka connection settings
are shared by all of them (``LOANSTREAM_KAFKA_*``) and passed to every client, SASL/SSL included.
Nothing else in the project reads ``os.environ``.

Every settings class also reads a ``.env`` file in the working directory (:func:`settings_config`);
a variable set in the real environment wins over the same one in ``.env``. ``docs/settings.md``
lists them all (``loanstream settings --markdown`` regenerates it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_FILE = ".env"


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "loanstream"


def settings_config(env_prefix: str) -> SettingsConfigDict:
    """The configuration of every LoanStream settings class: its env prefix, the ``.env`` file
    of the working directory under the real environment, and unknown variables ignored."""
    return SettingsConfigDict(
        env_prefix=env_prefix, env_file=ENV_FILE, env_file_encoding="utf-8", extra="ignore"
    )


class KafkaSettings(BaseSettings):
    """How every LoanStream client reaches Kafka (env prefix ``LOANSTREAM_KAFKA_``)."""

    model_config = settings_config("LOANSTREAM_KAFKA_")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="comma-separated host:port of Kafka brokers"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="how clients connect to the brokers"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism; default PLAIN when the protocol is SASL_*"
    )
    sasl_username: str | None = Field(default=None, description="SASL user name")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (a secret)")
    ssl_ca_location: Path | None = Field(
        default=None, description="CA certificate file (PEM) that signed the brokers'"
    )
    ssl_certificate_location: Path | None = Field(
        default=None, description="client certificate file (PEM), for mutual TLS"
    )
    ssl_key_location: Path | None = Field(
        default=None, description="client private key file (PEM), for mutual TLS"
    )
    ssl_key_password: SecretStr | None = Field(
        default=None, description="password of the client private key (a secret)"
    )
    client_id: str = Field(default="loanstream", description="client.id the brokers log")
    topic_prefix: str = Field(default="", description="prepended to every topic name")
    replication_factor: int = Field(
        default=1, ge=1, description="replicas of each topic `loanstream topics create` makes"
    )
    partitions: int | None = Field(
        default=None,
        ge=1,
        description="partition count of the keyed topics (applications, predictions, ...)",
    )
    faust_stream_buffer: int = Field(
        default=20_000,
        ge=100,
        description="messages a Faust stream holds before its fetcher pauses (Faust's 4,096 "
        "paused and resumed it every few batches: the scorer ran at 60% of this speed)",
    )
    model_update_key: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key of loan.model-updates: when set, the trainer signs each "
        "ModelUpdate and the scorer and monitor ignore one without a valid signature",
    )
    dead_letter_raw: bool = Field(
        default=False,
        description="dead letters keep the raw value (its first 16 KiB), personal data included; "
        "false: only its size and sha256",
    )
    faust_prompt_delivery: bool = Field(
        default=True,
        description="Faust services hand each fetched message to their streams without the four "
        "tasks Faust makes for it (loanstream.delivery); false: Faust's own hand-over",
    )

    def topic(self, name: str) -> str:
        """The real name of a declared topic, e.g. ``loan.applications`` with the prefix."""
        return f"{self.topic_prefix}{name}"

    def confluent(self) -> dict[str, str | int | float | bool]:
        """librdkafka properties for the connection (security included), no role-specific keys."""
        conf: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            # librdkafka would default to GSSAPI, Faust to PLAIN: both get the same one
            conf["sasl.mechanism"] = self.sasl_mechanism or "PLAIN"
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        for key, path in (
            ("ssl.ca.location", self.ssl_ca_location),
            ("ssl.certificate.location", self.ssl_certificate_location),
            ("ssl.key.location", self.ssl_key_location),
        ):
            if path:
                conf[key] = str(path)
        if self.ssl_key_password:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return conf


def kafka_settings(bootstrap_servers: str | None = None) -> KafkaSettings:
    """The environment's Kafka settings, with ``--bootstrap-servers`` taking precedence."""
    if bootstrap_servers:
        return KafkaSettings(bootstrap_servers=bootstrap_servers)
    return KafkaSettings()


class BrokerSettings(BaseSettings):
    """The local, embedded Kafka broker (env prefix ``LOANSTREAM_BROKER_``)."""

    model_config = settings_config("LOANSTREAM_BROKER_")

    port: int = Field(default=9092, ge=1, le=65535, description="client port of the broker")
    controller_port: int | None = Field(
        default=None, ge=1, le=65535, description="default: a free port chosen at start"
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="jars, logs and data of the local broker; default ~/.local/share/loanstream",
    )
    jars_dir: Path | None = Field(
        default=None, description="cache of the Kafka jars; default <data_dir>/kafka/<version>"
    )
    heap: str = Field(default="1g", pattern=r"^\d+[mMgG]$", description="JVM heap (-Xmx)")
    start_timeout_s: float = Field(
        default=90.0, gt=0, description="longest wait for the broker to answer after start"
    )
    stop_timeout_s: float = Field(
        default=30.0, gt=0, description="wait this long after SIGTERM before SIGKILL"
    )
    mvn: str = Field(default="mvn", description="Maven command that fetches the Kafka jars")
    java: str = Field(default="java", description="Java 17+ command that runs the broker")
