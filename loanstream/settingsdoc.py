"""The settings reference, generated from the settings classes themselves: ``docs/settings.md``.

Each settings class is named here by its dotted path and imported only when the reference is
made, so the shared package still imports no service. A test regenerates the reference and
compares it with the file, and fails on a setting without a description: the table cannot go
stale or leave a setting out. ``loanstream settings --out docs/settings.md`` (or ``python -m
loanstream.settingsdoc``) writes it again.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import sys
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

SETTINGS_CLASSES = (
    "loanstream.config:KafkaSettings",
    "loanstream.config:BrokerSettings",
    "loanstream.logs:LogSettings",
    "loanstream.lag:LagSettings",
    "scorer.settings:ScorerSettings",
    "monitor.settings:MonitorSettings",
    "trainer.settings:TrainerSettings",
    "loop.notify:NotifySettings",
)
DOC_PATH = Path("docs") / "settings.md"

HEADER = """# Settings

Every LoanStream process reads its settings from environment variables, and from a `.env` file in
the working directory; a variable set in the environment wins over the same one in `.env`.
Command-line options, where a command has them, win over both. `MLFLOW_TRACKING_URI` is MLflow's
own variable, shared by every service.

This file is generated from the settings classes: `loanstream settings --out docs/settings.md`
writes it again, and a test fails when it is stale or a setting has no description.
"""


@dataclass(frozen=True)
class Setting:
    """One setting as the reference shows it."""

    variable: str
    type: str
    default: str
    description: str


def settings_classes(paths: Iterable[str] = SETTINGS_CLASSES) -> list[type[BaseSettings]]:
    """The classes named by ``module:Class`` paths, imported now."""
    classes = []
    for path in paths:
        module, _, name = path.partition(":")
        classes.append(getattr(importlib.import_module(module), name))
    return classes


def settings_of(cls: type[BaseSettings]) -> list[Setting]:
    """The settings of ``cls`` in declaration order (mixins' fields included)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    return [
        Setting(
            variable=variable_name(prefix, name, field),
            type=type_name(field.annotation),
            default=default_text(field),
            description=(field.description or "").strip(),
        )
        for name, field in cls.model_fields.items()
    ]


def variable_name(prefix: str, name: str, field: FieldInfo) -> str:
    """The environment variable of a field: its alias if it has one (not prefixed), else the
    prefix and the field name, upper case as the docs write them (they match any case)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        alias = next((c for c in alias.choices if isinstance(c, str)), None)
    if isinstance(alias, str):
        return alias.upper()
    return f"{prefix}{name}".upper()


def type_name(annotation: Any) -> str:
    """A short, readable type: ``float``, ``str | None``, ``text | json``.

    >>> from typing import Literal
    >>> type_name(Literal["text", "json"] | None)
    'text | json | None'
    >>> type_name(tuple[str, ...])
    'tuple[str, ...]'
    """
    if annotation is type(None):
        return "None"
    if annotation is Ellipsis:
        return "..."
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(type_name(a) for a in args)}]"
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return " | ".join(str(m.value) for m in annotation)
    return str(getattr(annotation, "__name__", annotation))


def default_text(field: FieldInfo) -> str:
    """The default as one would write it in the environment; a computed one by its maker."""
    if field.default_factory is not None:
        return f"{getattr(field.default_factory, '__name__', 'computed')}()"
    return value_text(None if field.default is PydanticUndefined else field.default)


def value_text(value: Any) -> str:
    """A default value as text: ``true``, ``a,b``, empty for none.

    >>> [value_text(v) for v in (None, True, 0.5, ("logistic", "hgb"), frozenset({"b", "a"}))]
    ['', 'true', '0.5', 'logistic,hgb', 'a,b']
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, frozenset | set):
        return ",".join(sorted(value_text(v) for v in value))
    if isinstance(value, tuple | list):
        return ",".join(value_text(v) for v in value)
    return str(value)


def markdown(classes: Iterable[type[BaseSettings]] | None = None) -> str:
    """The reference: a section per settings class with a table of its settings."""
    parts = [HEADER]
    for cls in settings_classes() if classes is None else classes:
        doc = inspect.cleandoc(cls.__doc__ or "")
        parts.append(f"## {cls.__name__} (`{cls.__module__}`)\n")
        if doc:
            parts.append(" ".join(doc.split("\n\n")[0].split()) + "\n")
        rows = ["| variable | type | default | description |", "|---|---|---|---|"]
        for s in settings_of(cls):
            cells = (
                f"`{s.variable}`",
                s.type,
                f"`{s.default}`" if s.default else "",
                s.description,
            )
            rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    """``python -m loanstream.settingsdoc [PATH]``: write the reference (docs/settings.md)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DOC_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
