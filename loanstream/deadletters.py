"""What a dead letter keeps of a record it could not use: no feature values, a bounded size.

A dead letter says which record failed (key and position), why (a reason code and the error
text), where (the field paths that failed) and what its bytes were (size and sha256), but not
the bytes themselves: they are an applicant's personal data. Error texts quote what came, so
they are cut before it: pydantic's ``input_value=...`` and this project's ``..., got <what
came>``. Every part has a cap, so a dead letter's JSON stays under :data:`MAX_LETTER_BYTES`
whatever came in, and can always be sent.

>>> redact("features.income must be within [0, 10000000], got 98765432")
'features.income must be within [0, 10000000]'
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from loanstream.errors import InvalidRecord

MAX_LETTER_BYTES = 64 * 1024
"""Bound on a dead letter's JSON; the caps below add up to less (a test holds the worst case)."""

RAW_VALUE_LIMIT = 16 * 1024
"""Raw bytes kept when raw values are asked for: a whole application is ~1 KB; of a larger
record its first bytes show what it was, and ``value_bytes`` says how much was cut."""

KEY_LIMIT = 1024
ERROR_CHARS = 2000
FIELD_PATHS = 16
FIELD_PATH_CHARS = 128
NAME_CHARS = 255  # source topic (Kafka allows 249), reason, service

_INPUT_VALUE = re.compile(r", input_value=.*")  # to the end of its line: pydantic ends it there
_ERRORS_URL = re.compile(r"\n[ \t]*For further information visit \S*")
_GOT = re.compile(r", got .*", re.DOTALL)  # what came is always last; all of it goes


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters ending in "..." when it is longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def redact(text: str) -> str:
    """``text`` without the values it quotes: pydantic's ``input_value=…, input_type=…`` (and its
    help links), and everything from this project's ``, got <what came>`` on."""
    text = _INPUT_VALUE.sub("]", text[: 16 * ERROR_CHARS])
    return _GOT.sub("", _ERRORS_URL.sub("", text))


def _validation_error(error: BaseException) -> ValidationError | None:
    """The ValidationError behind ``error``: itself, or the one it was raised from or during
    (the validator raises InvalidRecord ``from None`` inside its ``except``, which keeps it as
    the context)."""
    for candidate in (error, error.__cause__, error.__context__):
        if isinstance(candidate, ValidationError):
            return candidate
    return None


def _path(loc: tuple[int | str, ...]) -> str:
    return cut(".".join(str(part) for part in loc), FIELD_PATH_CHARS)


def field_paths(error: str | BaseException) -> list[str] | None:
    """The paths (``features.income``) of the fields that failed validation, each once, in the
    order pydantic reports them; ``[]`` for a record that failed as a whole (not JSON), ``None``
    when ``error`` is not a validation failure."""
    invalid = None if isinstance(error, str) else _validation_error(error)
    if invalid is None:
        return None
    details = invalid.errors(include_url=False, include_context=False, include_input=False)
    paths = dict.fromkeys(_path(e["loc"]) for e in details if e["loc"])
    return list(paths)[:FIELD_PATHS]


def _validation_text(error: ValidationError) -> str:
    count = error.error_count()
    parts = [f"{count} validation error{'' if count == 1 else 's'} for {error.title}"]
    size = 0
    for e in error.errors(include_url=False, include_context=False, include_input=False):
        part = f"{_path(e['loc']) or 'message'}: {redact(e['msg'])} [type={e['type']}]"
        parts.append(part)
        size += len(part)
        if size > ERROR_CHARS:
            break
    return parts[0] + ": " + "; ".join(parts[1:])


def error_text(error: str | BaseException) -> str:
    """What went wrong, without the values that came, in at most ``ERROR_CHARS`` characters.

    A ValidationError is rewritten from its parts (loc, message, type; never the input); an
    InvalidRecord lists its problems, each cut before ``, got``; another exception reads
    ``Type: message``; a string is redacted as it stands.
    """
    if isinstance(error, str):
        text = redact(error)
    elif isinstance(error, ValidationError):
        text = _validation_text(error)
    elif isinstance(error, InvalidRecord):
        text = "; ".join(redact(problem) for problem in error.problems[: FIELD_PATHS * 4])
    else:
        text = f"{type(error).__name__}: {redact(str(error))}"
    return cut(text, ERROR_CHARS)
