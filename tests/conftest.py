from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from ehswatch.thresholds import SensorThresholds
from tests.evaluators import HARNESSES, Harness
from tests.servers import reap_services

MakeHarness = Callable[[Sequence[SensorThresholds]], Harness]

#: The modules whose tests reach the database through `tests.postgres.database_url`:
#: marked `database`, they run once per engine (`make test`: SQLite, then PostgreSQL).
#: The rest keep SQLite (its own faults: a locked or read-only file, a full disk), and
#: so do the workbench's browser tests (pages, over the same stores).
DATABASE_MODULES = frozenset(
    {
        "test_alarms", "test_api", "test_api_input", "test_cleaning", "test_database",
        "test_desk_reads", "test_exports", "test_governance", "test_hazards", "test_health",
        "test_heatmap", "test_idempotency", "test_interlock", "test_iso_times",
        "test_my_work", "test_near_miss", "test_patrols", "test_people", "test_predict",
        "test_responsibility", "test_review", "test_scale", "test_shift_figures",
        "test_sign_in_api",
    }
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in DATABASE_MODULES:
            item.add_marker(pytest.mark.database)


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
