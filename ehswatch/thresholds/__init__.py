"""Three-tier threshold evaluation (docs/thresholds.md): the vectorized evaluator and its
reference."""

from ehswatch.thresholds.evaluator import Evaluator
from ehswatch.thresholds.outcome import Evaluation, FaultChanges, TierTransitions
from ehswatch.thresholds.table import SensorThresholds, ThresholdTable
from ehswatch.thresholds.tier import FaultReason, Tier

__all__ = [
    "Evaluation",
    "Evaluator",
    "FaultChanges",
    "FaultReason",
    "SensorThresholds",
    "ThresholdTable",
    "Tier",
    "TierTransitions",
]
