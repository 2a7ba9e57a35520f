from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from ehswatch.thresholds import SensorThresholds
from tests.evaluators import HARNESSES, Harness

MakeHarness = Callable[[Sequence[SensorThresholds]], Harness]


@pytest.fixture(params=sorted(HARNESSES))
def make_harness(request: pytest.FixtureRequest) -> MakeHarness:
    """Builds the vectorized evaluator or the reference: each rule test runs on both."""
    cls = HARNESSES[request.param]

    def make(sensors: Sequence[SensorThresholds]) -> Harness:
        return cls(sensors)

    return make
