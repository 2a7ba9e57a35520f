"""`ControlState`: the control part publishes what people look at, once per tick.

An evaluator-stage listener (ticks only): it closes a sparkline step when one is due
(`SensorHistory`) and writes the sensors' arrays and the status document — health with
its reasons, the components' jobs, liveness, interlock states, the metric families —
into the shared state file (`shared_state.StateWriter`), which the desk part reads.
Its cost is fixed per tick (one copy of the arrays, one small JSON), however many people
look and whatever they ask for. It never raises into the evaluator: a failure to publish
is logged and counted, and the desk part sees the state age.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ehswatch.health import assess, jobs_health, liveness
from ehswatch.history import SensorHistory
from ehswatch.metrics import control_metrics
from ehswatch.readings import ReadingBatch
from ehswatch.shared_state import StateWriter
from ehswatch.thresholds.evaluator import Evaluator
from ehswatch.thresholds.outcome import Evaluation

if TYPE_CHECKING:
    from ehswatch.control_parts import ControlParts

log = logging.getLogger(__name__)


def control_status(service: ControlParts) -> dict[str, Any]:
    """The status document: everything the desk part shows of the control part."""
    report = assess(service)
    alive, why = liveness(service)
    now = service.clock()
    il = service.interlock
    return {
        "status": report.status,
        "reasons": list(report.reasons),
        "checks": report.checks,
        "components": jobs_health(service.components()),
        "alive": alive,
        "alive_reason": why,
        "started_at": service.started_at,
        "now": now,
        "wall_offset_s": service.clock.wall_offset(),
        "interlocks": None if il is None else [s.public(now) for s in il.states.values()],
        "metrics": control_metrics(service),
        "desk": None if service.desk_status is None else service.desk_status(),
        "shift_figures": service.shift_figures.public(),
        "predictions": service.predictions.public(),
    }


class ControlState:
    def __init__(
        self,
        *,
        evaluator: Evaluator,
        writer: StateWriter,
        history: SensorHistory,
        status: Callable[[], dict[str, Any]],
        clock: Callable[[], float],
    ) -> None:
        self.evaluator = evaluator
        self.writer = writer
        self.history = history
        self._status = status
        self._clock = clock
        self.published = 0
        self.failures = 0

    def on_evaluation(self, batch: ReadingBatch, _: Evaluation) -> None:
        if len(batch):
            return  # ticks only: at most once per tick_s
        self.publish()

    def publish(self) -> None:
        ev = self.evaluator
        try:
            row = self.history.tick(self._clock(), ev.last_value, ev.tier)
            self.writer.publish(
                tier=ev.tier,
                faulted=ev.faulted,
                reason=ev.fault_reason,
                value=ev.last_value,
                ts=ev.last_ts,
                late=ev.late_count,
                future=ev.future_count,
                too_old=ev.too_old_count,
                history_row=row,
                status=self._status(),
            )
            self.published += 1
        except Exception:  # never into the evaluator; the desk part sees the state age
            self.failures += 1
            log.exception("could not publish the control part's state")
