"""The detection benchmark's information bound (`bench.detection.oracle`)."""

from __future__ import annotations

from bench import detection


def test_the_oracle_finds_each_change_after_it_and_only_then() -> None:
    """Before a change the worlds before and after it agree on every label, so the oracle's
    CUSUM cannot move; after a start and after an end it finds the change within a few hundred
    labels (the recurring stress moves every applicant's log-odds by 1.2)."""
    detection._init(None, {}, {})  # type: ignore[arg-type]
    job = detection.Job("recurring", seed=1, events=40_000, horizon=10_000)
    frame, changes = detection.stream_frame(job)
    assert [(c.position, c.kind) for c in changes] == [
        (15_000, "starts"),
        (25_000, "ends"),
        (35_000, "starts"),
    ]
    found = detection.oracle(job, frame, changes)
    assert len(found) == 3
    for change, at in zip(changes, found, strict=True):
        assert change.position <= at < change.position + 500


def test_the_oracle_needs_thousands_of_labels_for_a_mild_drift() -> None:
    detection._init(None, {}, {})  # type: ignore[arg-type]
    job = detection.Job("concept-drift-mild", seed=1, events=30_000, horizon=10_000)
    frame, changes = detection.stream_frame(job)
    [at] = detection.oracle(job, frame, changes)
    assert at - 20_000 == 2_178
