"""Champion/challenger: promote only a model that beats the champion on the same holdout by a
margin on the primary metric, without worse calibration.

>>> decide({"auc": 0.80, "ece": 0.010}, {"auc": 0.79, "ece": 0.012}, "auc", 0.002, 0.005).promote
True
>>> decide({"auc": 0.80, "ece": 0.030}, {"auc": 0.79, "ece": 0.012}, "auc", 0.002, 0.005).reason
'calibration is worse: ECE 0.0300 vs champion 0.0120 (tolerance 0.005)'
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.evaluate import PRIMARY_METRICS


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def decide(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    primary: str,
    margin: float,
    calibration_tolerance: float,
) -> PromotionDecision:
    if champion is None:
        return PromotionDecision(True, "no champion yet")
    higher_is_better = PRIMARY_METRICS[primary]
    gain = challenger[primary] - champion[primary]
    if not higher_is_better:
        gain = -gain
    if gain < margin:
        return PromotionDecision(
            False,
            f"{primary} {challenger[primary]:.4f} vs champion {champion[primary]:.4f}: "
            f"gain {gain:+.4f} is below the margin {margin}",
        )
    if challenger["ece"] > champion["ece"] + calibration_tolerance:
        return PromotionDecision(
            False,
            f"calibration is worse: ECE {challenger['ece']:.4f} vs champion "
            f"{champion['ece']:.4f} (tolerance {calibration_tolerance})",
        )
    return PromotionDecision(
        True,
        f"{primary} {challenger[primary]:.4f} beats champion {champion[primary]:.4f} "
        f"by {gain:+.4f}; ECE {challenger['ece']:.4f} vs {champion['ece']:.4f}",
    )
