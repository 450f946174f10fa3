import numpy as np
import pytest

from loanstream.models import DecisionBands
from trainer.evaluate import classification_metrics, expected_calibration_error
from trainer.promotion import decide


def test_ece_is_near_zero_for_calibrated_and_large_for_overconfident_probabilities() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200_000)
    y = (rng.uniform(0, 1, p.size) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.005
    overconfident = np.where(p > 0.5, 0.99, 0.01)
    assert expected_calibration_error(y, overconfident) == pytest.approx(0.24, abs=0.01)


def test_metrics_on_a_known_case() -> None:
    y = np.array([1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.4, 0.2])
    m = classification_metrics(y, p)
    assert m["auc"] == 1.0 and m["accuracy"] == 1.0
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.16 + 0.04) / 4)
    assert m["default_rate"] == 0.5


@pytest.mark.parametrize(
    ("costs", "low", "high"),
    [
        ((5.0, 1.0, 0.5), 0.5, 0.9),
        ((5.0, 1.0, 0.0), 0.0, 1.0),
        ((2.0, 1.0, 2.0), 2 / 3, 2 / 3),  # reviewing never pays: one break-even threshold
    ],
)
def test_bands_follow_the_costs(costs: tuple[float, float, float], low: float, high: float) -> None:
    bands = DecisionBands.from_costs(*costs)
    assert (bands.decline_below, bands.approve_from) == (pytest.approx(low), pytest.approx(high))


def test_bands_refuse_nonsense_costs() -> None:
    with pytest.raises(ValueError, match="costs must be positive"):
        DecisionBands.from_costs(0.0, 1.0, 0.5)


def test_promotion_needs_a_margin_and_no_worse_calibration() -> None:
    champion = {"auc": 0.80, "ece": 0.010, "log_loss": 0.40}
    assert (
        decide({"auc": 0.81, "ece": 0.011}, None, "auc", 0.002, 0.005).reason == "no champion yet"
    )
    assert decide({"auc": 0.801, "ece": 0.01}, champion, "auc", 0.002, 0.005).promote is False
    assert decide({"auc": 0.81, "ece": 0.012}, champion, "auc", 0.002, 0.005).promote is True
    assert decide({"auc": 0.81, "ece": 0.020}, champion, "auc", 0.002, 0.005).promote is False
    lower_loss = {"auc": 0.80, "ece": 0.01, "log_loss": 0.39}
    assert decide(lower_loss, champion, "log_loss", 0.002, 0.005).promote is True
