"""The hashed locks: every pin hashed, the image's a subset of the venv's, the dev extra pinned."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)")


def pins(name: str) -> dict[str, str]:
    """Package -> version of a lock file; asserts every pin carries at least one hash."""
    text = (ROOT / "requirements" / name).read_text()
    found: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = PIN.match(block)
        if match:
            assert "--hash=sha256:" in block, f"{name}: {match.group(1)} has no hash"
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def test_the_image_lock_is_a_subset_of_the_dev_lock_at_the_same_versions() -> None:
    dev, runtime = pins("dev.txt"), pins("runtime.txt")
    assert runtime and all(dev.get(package) == version for package, version in runtime.items())


def test_every_declared_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev, runtime = pins("dev.txt"), pins("runtime.txt")
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in runtime and name in dev, requirement
    for requirement in project["optional-dependencies"]["dev"]:
        name = re.split(r"[<>=!\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in dev, requirement
