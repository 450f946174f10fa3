"""The README's command table is an interface people script against: every command it names is
a real one, and every command of the CLI is in it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from loanstream.cli import get_app

README = Path(__file__).resolve().parents[2] / "README.md"


def cli_commands(command: Any, path: tuple[str, ...] = ()) -> set[str]:
    """Every leaf command of the CLI, as the words a user types after ``loanstream``."""
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        return {" ".join(path)}
    found: set[str] = set()
    for name, sub in subcommands.items():
        found |= cli_commands(sub, (*path, name))
    return found


def readme_commands(text: str) -> set[str]:
    """The command words of each row of the README's table under "## Commands": the leading
    lower-case words of the first cell after ``loanstream``, before any argument or option.

    >>> sorted(readme_commands("## Commands\\n| `loanstream model list [-b S]` | x |\\n"
    ...                        "| `loanstream score FILE --out F` | y |\\n## Next\\n"))
    ['model list', 'score']
    """
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    found = set()
    for row in re.findall(r"^\| `loanstream ([^`]*)`", section, flags=re.MULTILINE):
        words = []
        for word in row.split():
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            words.append(word)
        found.add(" ".join(words))
    return found


def test_every_readme_command_exists_and_every_command_is_in_the_readme() -> None:
    cli = cli_commands(typer.main.get_command(get_app()))
    readme = readme_commands(README.read_text())
    assert readme - cli == set(), "in the README's table but not a command"
    assert cli - readme == set(), "a command missing from the README's table"


def test_the_readme_keeps_its_two_setup_commands() -> None:
    setup = README.read_text().split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"```bash\n(.*?)\n```", setup) == ["make demo", "make test"]
