"""Selective labels without a broker: the seeded exploration draw, the gate that holds outcomes
until their decision, its Kafka shell on a fake feed, the backtest view and the CLI flags."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from loanstream.config import KafkaSettings
from loanstream.contracts import Decision
from loanstream.spec import load_spec
from producer.cli import register
from producer.decisions import DecisionFeed, SelectiveOutcomes, _decision
from producer.generator import TRUE_PROBABILITY, Generator
from producer.metrics import ProducerMetrics
from producer.scenarios import load_scenario
from producer.selection_bias import PopulationMetrics, compare_populations, selective_view
from producer.selective import (
    Fate,
    LabelsMode,
    Selection,
    SelectiveGate,
    exploration_draw,
    fate_of,
)
from producer.world import load_world

SPEC = load_spec()
IDS = [f"app-3-{i:09d}" for i in range(20_000)]


def test_the_exploration_draw_is_fixed_by_id_and_seed_and_uniform() -> None:
    draws = np.array([exploration_draw(i, 3) for i in IDS])
    assert draws.tolist() == [exploration_draw(i, 3) for i in IDS]  # reruns agree
    assert exploration_draw(IDS[0], 3) == pytest.approx(0.4907182, abs=1e-7)  # not process-salted
    other = np.array([exploration_draw(i, 4) for i in IDS])
    explored, explored_other = set(np.flatnonzero(draws < 0.05)), set(np.flatnonzero(other < 0.05))
    assert len(explored) == 1051  # 5% of 20,000 is 1,000, binomial sd 31
    assert len(explored & explored_other) < 0.1 * len(explored)  # another seed, other applicants
    assert np.histogram(draws, bins=10, range=(0, 1))[0].min() > 1900


def test_approved_loans_always_get_their_outcome_and_the_rest_only_when_explored() -> None:
    declined = [i for i in IDS[:2000] if exploration_draw(i, 3) < 0.05]
    for application_id in IDS[:2000]:
        assert fate_of(Decision.APPROVE, application_id, 0.0, 3) is Fate.APPROVED
        expected = Fate.EXPLORED if application_id in declined else Fate.WITHHELD
        assert fate_of("decline", application_id, 0.05, 3) is expected
        assert fate_of("review", application_id, 0.05, 3) is expected
        assert fate_of("review", application_id, 1.0, 3) is Fate.EXPLORED
        assert fate_of("review", application_id, 0.0, 3) is Fate.WITHHELD
    assert len(declined) == 111


def test_due_outcomes_wait_for_their_decision_and_are_given_up_on_after_the_timeout() -> None:
    gate: SelectiveGate[str] = SelectiveGate(exploration=0.0, seed=0, timeout_s=10.0)
    gate.expect(["a", "b", "c", "d"])
    first = gate.decide([("a", "approve"), ("b", "review"), ("x", "approve")], now=0.0)
    assert first.send == () and gate.waiting == 0
    due = gate.offer([("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")], now=1.0)
    assert (due.send, due.approved, due.withheld, gate.waiting) == (("A",), 1, 1, 2)
    assert gate.expire(now=10.9).undecided == ()  # c and d wait until 11.0
    late = gate.decide([("c", "approve"), ("c", "decline")], now=5.0)
    assert (late.send, late.approved) == (("C",), 1)
    expired = gate.expire(now=11.0)
    assert (expired.send, expired.undecided, gate.waiting) == ((), ("d",), 0)
    assert gate.decide([("d", "approve")], now=12.0).send == ()  # too late: counted undecided
    assert gate.offer([("x", "X")], now=12.0).send == ()  # x was not expected: its decision
    assert gate.waiting == 1  # was not kept, so its outcome waits like any other


def test_a_duplicate_prediction_keeps_the_first_decision() -> None:
    gate: SelectiveGate[str] = SelectiveGate(exploration=0.0, seed=0, timeout_s=10.0)
    gate.expect(["a"])
    gate.decide([("a", "decline"), ("a", "approve")], now=0.0)
    assert gate.offer([("a", "A")], now=1.0).withheld == 1


@settings(max_examples=60, deadline=None)
@given(
    order=st.randoms(use_true_random=False),
    exploration=st.sampled_from([0.0, 0.2, 1.0]),
    seed=st.integers(0, 3),
)
def test_whatever_the_order_the_gate_sends_exactly_what_the_pure_rule_says(
    order: random.Random, exploration: float, seed: int
) -> None:
    decisions = {i: ("approve", "review", "decline")[n % 3] for n, i in enumerate(IDS[:60])}
    events = [("decide", i) for i in decisions] + [("due", i) for i in decisions]
    order.shuffle(events)
    gate: SelectiveGate[str] = SelectiveGate(exploration, seed, timeout_s=100.0)
    gate.expect(decisions)
    sent: list[str] = []
    for now, (kind, application_id) in enumerate(events):
        if kind == "decide":
            released = gate.decide([(application_id, decisions[application_id])], float(now))
        else:
            released = gate.offer([(application_id, application_id)], float(now))
        sent += released.send
    expected = {
        i
        for i, d in decisions.items()
        if fate_of(d, i, exploration, seed) in (Fate.APPROVED, Fate.EXPLORED)
    }
    assert sorted(sent) == sorted(expected) and gate.waiting == 0


class FakeFeed(DecisionFeed):
    def __init__(self, batches: list[list[tuple[str, str]]]) -> None:
        super().__init__(KafkaSettings())
        self.batches = batches
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def poll(self, wait_s: float = 0.0, max_messages: int = 10_000) -> list[tuple[str, str]]:
        return self.batches.pop(0) if self.batches else []

    def close(self) -> None:
        self.closed = True


def outcome(application_id: str) -> tuple[bytes, bytes, int]:
    return application_id.encode(), b"{}", 0


def test_the_shell_counts_every_fate_in_the_summary_counts_and_the_metrics() -> None:
    registry = CollectorRegistry()
    ids = [i for i in IDS[:400] if exploration_draw(i, 1) < 0.5][:3]  # explored at 0.5
    ids += [i for i in IDS[:400] if exploration_draw(i, 1) >= 0.5][:2]  # withheld at 0.5
    approved, explored, withheld, late, never = "ok-1", ids[0], ids[3], "ok-2", "nobody"
    feed = FakeFeed(
        [
            [(approved, "approve"), (explored, "decline"), (withheld, "review")],
            [(late, "approve")],
        ]
    )
    clock = iter([0.0, 1.0, 100.0]).__next__
    selection = Selection(mode=LabelsMode.APPROVED, exploration=0.5, seed=1, decision_timeout_s=30)
    shell = SelectiveOutcomes(KafkaSettings(), selection, ProducerMetrics(registry), feed, clock)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("loanstream_producer_outcome_fates_total", fate="undecided") == 0.0
    shell.start()
    shell.expect([outcome(i) for i in (approved, explored, withheld, late, never)])
    due = [outcome(i) for i in (approved, explored, withheld, late, never)]
    assert [k for k, _, _ in shell.release(due)] == [approved.encode(), explored.encode()]
    assert shell.waiting == 2
    assert sample("loanstream_producer_outcomes_awaiting_decision") == 2.0
    assert [k for k, _, _ in shell.release([])] == [late.encode()]
    assert shell.release([]) == [] and shell.waiting == 0  # at 100 s "nobody" is given up on
    assert shell.counts == {
        Fate.APPROVED: 2,
        Fate.EXPLORED: 1,
        Fate.WITHHELD: 1,
        Fate.UNDECIDED: 1,
    }
    assert shell.undecided_examples == [never]
    for fate, n in (("approved", 2), ("explored", 1), ("withheld", 1), ("undecided", 1)):
        assert sample("loanstream_producer_outcome_fates_total", fate=fate) == n
    shell.close()
    assert feed.started and feed.closed


def test_predictions_without_an_id_or_a_decision_are_skipped() -> None:
    assert _decision(b'{"application_id": "a", "decision": "approve", "x": 1}') == ("a", "approve")
    for bad in (b"", b"not json", b"[1]", b'{"application_id": "a"}', b'{"decision": "approve"}'):
        assert _decision(bad) is None
    assert _decision(b'{"application_id": "a", "decision": "maybe"}') is None


def scored(rows: int, seed: int) -> pd.DataFrame:
    """Applications scored by a calibrated model (the world's own P(repaid)), three decisions."""
    generator = Generator(SPEC, load_world(None, SPEC), load_scenario("stable"), seed=seed)
    frame = generator.rows(0, rows)
    p = frame[TRUE_PROBABILITY].to_numpy()
    return pd.DataFrame(
        {
            "application_id": frame["application_id"],
            "probability": p,
            "decision": np.where(p >= 0.75, "approve", np.where(p >= 0.55, "review", "decline")),
            "label": frame["repaid"].astype(int),
        }
    )


def figures(metrics: PopulationMetrics) -> tuple[float, float]:
    """Accuracy and default rate, to three places."""
    assert metrics.accuracy is not None and metrics.default_rate is not None
    return round(metrics.accuracy, 3), round(metrics.default_rate, 3)


def test_the_approved_only_view_hides_a_real_difference() -> None:
    frame = scored(20_000, seed=3)
    view = selective_view(frame, exploration=0.05, seed=3)
    approved = frame["decision"] == "approve"
    explored = (
        np.array([exploration_draw(i, 3) < 0.05 for i in frame["application_id"]])
        & ~approved.to_numpy()
    )
    assert view["has_outcome"].tolist() == (approved | explored).tolist()
    assert view["fate"].value_counts().to_dict() == {
        "approved": 13_355,
        "withheld": 6_314,
        "explored": 331,
    }

    c = compare_populations(frame, exploration=0.05, seed=3)
    seen = view[view["has_outcome"]]
    y, p = seen["label"].to_numpy(), seen["probability"].to_numpy()
    assert (c.labelled.rows, c.explored_rows, c.approved.rows) == (13_686, 331, 13_355)
    assert c.labelled.accuracy == np.mean((p >= 0.5) == (y == 1))
    assert c.labelled.default_rate == np.mean(y == 0)
    assert c.everyone.rows == 20_000
    assert c.everyone.accuracy == np.mean((frame["probability"] >= 0.5) == (frame["label"] == 1))
    assert c.everyone.default_rate == pytest.approx(1 - frame["label"].mean(), abs=1e-15)
    # what the labels show: fewer defaults and a better-looking model than on everyone
    assert figures(c.labelled) == (0.900, 0.103)
    assert figures(c.approved) == (0.907, 0.093)
    assert figures(c.everyone) == (0.823, 0.226)
    # the explored rows, each standing for 1 / 0.05 of the others, recover everyone's figures
    assert c.reweighted is not None
    assert figures(c.reweighted) == (0.811, 0.229)
    assert c.sentence() == (
        "the approved-only view shows 90.0% accuracy and a 10.3% default rate on 13,686 rows "
        "(331 of them explored); on everyone it would be 82.3% accuracy and a 22.6% default "
        "rate on 20,000 rows"
    )
    assert compare_populations(frame, exploration=0.0, seed=3).reweighted is None


def test_the_manifest_records_the_labels_mode() -> None:
    assert Selection().manifest() == {"mode": "all", "exploration": None}
    chosen = Selection(mode=LabelsMode.APPROVED, exploration=0.1, seed=9).manifest()
    assert (chosen["mode"], chosen["exploration"], chosen["seed"]) == ("approved", 0.1, 9)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--exploration", "1.5"], "Invalid value for '--exploration': Input should be less than"),
        (["--labels", "some"], "'some' is not one of 'all', 'approved'"),
    ],
)
def test_the_labels_flags_are_checked(flags: list[str], message: str) -> None:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["produce", "--count", "1", *flags])
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("\u2502", " ").split())  # boxed by Rich
