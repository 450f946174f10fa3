"""At start, the trainer makes loan.model-updates agree with the registry.

A promotion whose ModelUpdate was never published (no broker at that moment, a crash between
the two) leaves the topic's last word behind the registry. The registry decides what serves, so
the services are right either way; the topic, which people and dashboards read as the story of
the champions, is put right by announcing the registry's champion again.

>>> from trainer.registry import RegisteredVersion
>>> champion = RegisteredVersion("m", "3", "run", "a" * 64, {})
>>> announcement(champion, None).version, announcement(champion, champion.update())
('3', None)
"""

from __future__ import annotations

from loanstream.config import KafkaSettings
from loanstream.contracts import ModelUpdate
from loanstream.reading import read_topic
from loanstream.topics import MODEL_UPDATES
from trainer.registry import RegisteredVersion


def last_update(
    kafka: KafkaSettings, model_name: str, timeout_s: float = 30.0
) -> ModelUpdate | None:
    """The last readable ModelUpdate for ``model_name`` on loan.model-updates, None if none.

    Updates are keyed by model name, so one partition holds them all in order; a record that
    is not a ModelUpdate is passed over (the services ignore it too).
    """
    key = model_name.encode()

    def parse(k: bytes | None, value: bytes) -> ModelUpdate | None:
        if k != key:
            return None
        try:
            update = ModelUpdate.from_json(value)
        except ValueError:  # pydantic's ValidationError is one
            return None
        return update if update.model_name == model_name else None

    updates = read_topic(kafka, kafka.topic(MODEL_UPDATES), timeout_s=timeout_s, parse=parse)
    return updates[-1] if updates else None


def announcement(
    champion: RegisteredVersion | None, last: ModelUpdate | None
) -> ModelUpdate | None:
    """The ModelUpdate to publish so that the topic names the registry's champion, or None
    when it already does (or there is no champion to name)."""
    if champion is None:
        return None
    if last is not None and (last.version, last.sha256) == (champion.version, champion.sha256):
        return None
    return champion.update()
