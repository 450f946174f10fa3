"""docs/settings.md is the generated reference of every setting, complete and current."""

from __future__ import annotations

import ast
from pathlib import Path

from loanstream.settingsdoc import SETTINGS_CLASSES, markdown, settings_classes, settings_of

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("loanstream", "producer", "scorer", "monitor", "trainer", "loop")


def test_every_settings_class_is_listed() -> None:
    """A BaseSettings class added anywhere in the packages must join SETTINGS_CLASSES."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                bases = [
                    getattr(b, "id", getattr(b, "attr", "")) for b in getattr(node, "bases", [])
                ]
                if isinstance(node, ast.ClassDef) and "BaseSettings" in bases:
                    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                    found.add(f"{module}:{node.name}")
    assert found == set(SETTINGS_CLASSES)


def test_every_setting_has_a_description() -> None:
    missing = [
        s.variable for cls in settings_classes() for s in settings_of(cls) if not s.description
    ]
    assert missing == []


def test_docs_settings_md_is_current() -> None:
    """Fails when a setting is added, renamed or described differently without regenerating:
    `loanstream settings --out docs/settings.md`."""
    assert (ROOT / "docs" / "settings.md").read_text() == markdown()


def test_every_setting_appears_in_the_table() -> None:
    text = (ROOT / "docs" / "settings.md").read_text()
    rows = {
        line.split(" | ")[0].strip("| `") for line in text.splitlines() if line.startswith("| `")
    }
    for cls in settings_classes():
        for s in settings_of(cls):
            assert s.variable in rows
    assert "| `LOANSTREAM_SCORER_API_HOST` | str | `127.0.0.1` |" in text
    assert "| `LOANSTREAM_LOG_FORMAT` | text \\| json | `text` |" in text
