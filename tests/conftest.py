from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from ehswatch.thresholds import SensorThresholds
from tests.evaluators import HARNESSES, Harness
from tests.servers import reap_services

MakeHarness = Callable[[Sequence[SensorThresholds]], Harness]


@pytest.fixture(params=sorted(HARNESSES))
def make_harness(request: pytest.FixtureRequest) -> MakeHarness:
    """Builds the vectorized evaluator or the reference: each rule test runs on both."""
    cls = HARNESSES[request.param]

    def make(sensors: Sequence[SensorThresholds]) -> Harness:
        return cls(sensors)

    return make


@pytest.fixture(autouse=True)
def no_service_outlives_its_test() -> Iterator[None]:
    """A service a test started and did not stop is killed; on a test that passed, that
    is the test's own failure (it should have stopped it)."""
    yield
    assert not reap_services(), "the test left an ehswatch service running"
