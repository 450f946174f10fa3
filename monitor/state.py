"""The monitor's detector state on the compacted loan.monitor-state topic, at any size.

Each model version's pipeline state (plain data: numbers, lists, strings) is compressed and
cut into parts of at most ``PART_BYTES``, one record per part, keyed
``<app_id>/<slot>/<version>/<part>``. A snapshot writes its parts into one of two slots, the
one the last snapshot did not use, and only once Kafka holds them all, a manifest keyed
``<app_id>`` that names the slot, each version's part count and sha256, and (in a header) the
source offsets the snapshot covers. Compaction keeps the newest record per key, so the newest
manifest always points at a slot written whole: a monitor killed while writing parts leaves the
slot in use untouched. Parts of retired versions are deleted (tombstones) from the slot written.

Reading back trusts nothing: a manifest or a version that cannot be read (wrong format, missing
part, sha256 mismatch, too large, state that does not fit) is skipped with its reason, and the
monitor starts that version fresh.

>>> writer = StateWriter("loan.monitor-state", "mon")
>>> parts, manifest = writer.records({"1": {"positions": [1, 2]}}, b"[]")
>>> [r.key for r in parts], manifest.key
([b'mon/a/1/0'], b'mon')
>>> writer.sent()  # the manifest is in Kafka: the next snapshot writes slot b
>>> saved = read_saved({r.key: r.value for r in [*parts, manifest]}, "mon")
>>> saved.pipelines, saved.unreadable
({'1': {'positions': [1, 2]}}, {})
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from loanstream.streams import Record

STATE_FORMAT = 2
PART_BYTES = 512 * 1024  # well under the broker's default message size limit
MAX_VERSION_BYTES = 256 * 1024 * 1024  # decompressed: refuse a zip bomb rather than expand it
OFFSETS_HEADER = "source-offsets"  # on each manifest: the source records its snapshot covers
SLOTS = ("a", "b")
SHADOW_STATE = "(shadow)"  # the shadow windows' entry beside the versions: never a model version


class StateUnreadable(ValueError):
    """A saved state, or part of it, that cannot be used."""


@dataclass
class SavedState:
    """What the newest manifest holds: each readable version's state, and why the rest were not
    read (``""`` names the manifest itself)."""

    pipelines: dict[str, Any] = field(default_factory=dict)  # and the shadow windows' entry
    unreadable: dict[str, str] = field(default_factory=dict)
    slot: str | None = None
    keys: set[bytes] = field(default_factory=set)  # part keys on the topic, live or not

    @property
    def versions(self) -> dict[str, Any]:
        """The model versions' pipeline states (without the shadow windows' entry)."""
        return {v: state for v, state in self.pipelines.items() if v != SHADOW_STATE}


class StateWriter:
    """Builds the records of each snapshot, alternating slots and retiring old parts."""

    def __init__(self, topic: str, app_id: str) -> None:
        self.topic = topic
        self.app_id = app_id
        self.slot = SLOTS[0]  # the slot the next snapshot writes
        self._keys: dict[str, set[bytes]] = {slot: set() for slot in SLOTS}
        self._pending: set[bytes] = set()

    def resume(self, saved: SavedState) -> None:
        """Continue after ``saved``: write the other slot, and retire the parts already there."""
        prefix = f"{self.app_id}/".encode()
        for key in saved.keys:
            slot = key[len(prefix) :].split(b"/", 1)[0].decode(errors="replace")
            if key.startswith(prefix) and slot in self._keys:
                self._keys[slot].add(key)
        if saved.slot in SLOTS:
            self.slot = SLOTS[1 - SLOTS.index(saved.slot)]

    def sent(self) -> None:
        """The last snapshot's manifest is in Kafka: the next one writes the other slot."""
        self._keys[self.slot] = self._pending
        self.slot = SLOTS[1 - SLOTS.index(self.slot)]

    def records(self, pipelines: Mapping[str, Any], offsets: bytes) -> tuple[list[Record], Record]:
        """The part records (and tombstones) to send first, then the manifest to send once they
        are in Kafka. Call ``sent`` once the manifest is in Kafka too: until then every call
        writes the same slot, the one no manifest points at."""
        slot, parts, versions = self.slot, [], {}
        written: set[bytes] = set()
        for version, state in pipelines.items():
            blob = zlib.compress(orjson.dumps(state), 6)
            chunks = [blob[i : i + PART_BYTES] for i in range(0, len(blob), PART_BYTES)]
            for i, chunk in enumerate(chunks):
                key = f"{self.app_id}/{slot}/{version}/{i}".encode()
                parts.append(Record(self.topic, key, chunk))
                written.add(key)
            versions[version] = {
                "parts": len(chunks),
                "sha256": hashlib.sha256(blob).hexdigest(),
            }
        parts += [Record(self.topic, key, None) for key in sorted(self._keys[slot] - written)]
        self._pending = written
        manifest = orjson.dumps({"format": STATE_FORMAT, "slot": slot, "versions": versions})
        headers = [(OFFSETS_HEADER, offsets)]
        return parts, Record(self.topic, self.app_id.encode(), manifest, headers=headers)


def read_saved(latest: Mapping[bytes, bytes | None], app_id: str) -> SavedState:
    """The state of ``app_id`` from the newest value of each key on the topic (None or b"": a
    tombstone)."""
    prefix = f"{app_id}/".encode()
    saved = SavedState(keys={k for k in latest if k.startswith(prefix)})
    raw = latest.get(app_id.encode())
    if not raw:
        return saved
    try:
        manifest = _manifest(raw)
    except StateUnreadable as err:
        saved.unreadable[""] = str(err)
        return saved
    saved.slot = manifest["slot"]
    for version, entry in manifest["versions"].items():
        try:
            saved.pipelines[version] = _version(latest, app_id, saved.slot, version, entry)
        except StateUnreadable as err:
            saved.unreadable[version] = str(err)
    return saved


def _manifest(raw: bytes) -> dict[str, Any]:
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise StateUnreadable(
            "the manifest is not JSON (a state written before format 2?)"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != STATE_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise StateUnreadable(f"expected state format {STATE_FORMAT}, got {got!r}")
    versions = manifest.get("versions")
    if manifest.get("slot") not in SLOTS or not isinstance(versions, dict):
        raise StateUnreadable(f"expected a slot in {SLOTS} and a map of versions")
    return manifest


def _version(
    latest: Mapping[bytes, bytes | None], app_id: str, slot: str, version: str, entry: Any
) -> Any:
    if not isinstance(entry, dict) or not isinstance(entry.get("parts"), int):
        raise StateUnreadable("expected a part count and a sha256")
    count = entry["parts"]
    if not 1 <= count <= MAX_VERSION_BYTES // PART_BYTES:
        raise StateUnreadable(f"expected 1 to {MAX_VERSION_BYTES // PART_BYTES} parts, got {count}")
    chunks = [latest.get(f"{app_id}/{slot}/{version}/{i}".encode()) for i in range(count)]
    if not all(chunks):
        raise StateUnreadable(f"{chunks.count(None) + chunks.count(b'')} of {count} parts missing")
    blob = b"".join(c for c in chunks if c)
    if hashlib.sha256(blob).hexdigest() != entry.get("sha256"):
        raise StateUnreadable("the parts do not match the manifest's sha256")
    expand = zlib.decompressobj()
    try:
        text = expand.decompress(blob, MAX_VERSION_BYTES)
        if expand.unconsumed_tail:
            raise StateUnreadable(f"expands beyond {MAX_VERSION_BYTES} bytes")
        return orjson.loads(text)
    except (zlib.error, orjson.JSONDecodeError) as err:
        raise StateUnreadable(f"not compressed JSON: {err}") from None
