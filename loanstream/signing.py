"""HMAC signatures of ModelUpdates, so a service can tell the trainer's prompts from anyone's.

The registry decides which model serves (see ``scorer.watcher``); a forged update can at most
make the services look in the registry early. With a key set (``LOANSTREAM_KAFKA_MODEL_UPDATE_KEY``)
even that is refused: the trainer signs, the scorer and monitor ignore what does not verify.

>>> from loanstream.contracts import ModelUpdate
>>> update = ModelUpdate(model_name="m", version="2", run_id="r", model_uri="models:/m/2",
...                      sha256="0" * 64)
>>> signed = sign_update(update, "k")
>>> verify_update(signed, "k"), verify_update(signed, "other"), verify_update(update, "k")
(True, False, False)
>>> verify_update(update, None)
True
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import ValidationError

from loanstream.contracts import ModelUpdate


def _digest(update: ModelUpdate, key: str) -> str:
    unsigned = update.model_copy(update={"signature": None}).to_json()
    return hmac.new(key.encode(), unsigned, hashlib.sha256).hexdigest()


def sign_update(update: ModelUpdate, key: str | None) -> ModelUpdate:
    """The update with its signature under ``key`` (unchanged when there is no key)."""
    if not key:
        return update
    return update.model_copy(update={"signature": _digest(update, key)})


def verify_update(update: ModelUpdate, key: str | None) -> bool:
    """True when no key is set, or the update carries the signature of ``key``."""
    if not key:
        return True
    if update.signature is None:
        return False
    return hmac.compare_digest(update.signature, _digest(update, key))


def prompt(value: bytes | None, model_name: str, key: str | None) -> str:
    """What a loan.model-updates record asks of a service that watches ``model_name``:
    ``"look"`` (at the registry, now), or why not: ``"invalid"`` (not a ModelUpdate),
    ``"other"`` (another model's) or ``"unsigned"`` (no valid signature while a key is set)."""
    try:
        update = ModelUpdate.from_json(value or b"")
    except ValidationError:
        return "invalid"
    if update.model_name != model_name:
        return "other"
    return "look" if verify_update(update, key) else "unsigned"
