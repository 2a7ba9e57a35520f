"""The control part's Prometheus metric families, computed once per published state.

`control_metrics(service)` lists every family the control part knows (evaluator, MQTT,
Modbus, alarms, storage, interlocks) as JSON-able `[name, kind, help, samples]`, samples
as `[labels, value]`; the desk part renders them on `/metrics` together with the
per-sensor counters it reads from the shared arrays and its own families.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ehswatch.control_parts import ControlParts

Family = list[Any]  # [name, kind, help, [[labels, value], ...]]


def control_metrics(service: ControlParts) -> list[Family]:
    families: list[Family] = []

    def metric(
        name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]
    ) -> None:
        families.append([name, kind, help_, [[labels, value] for labels, value in samples]])

    st = service.stage.stats
    metric("ehswatch_readings_total", "counter", "Readings evaluated.", [({}, st.readings)])
    metric("ehswatch_evaluations_total", "counter", "Micro-batches evaluated.", [({}, st.batches)])
    metric(
        "ehswatch_evaluator_batch_seconds",
        "gauge",
        "Evaluator time of the last batch.",
        [({}, st.last_batch_ms / 1000)],
    )
    metric(
        "ehswatch_evaluator_batch_seconds_max",
        "gauge",
        "Longest evaluator batch so far.",
        [({}, st.max_batch_ms / 1000)],
    )
    if service.mqtt is not None:
        rejects = service.mqtt.stats.rejects.by_reason
        metric(
            "ehswatch_mqtt_rejected_total",
            "counter",
            "MQTT payloads dropped, by reason.",
            [({"reason": r}, n) for r, n in sorted(rejects.items())] or [({"reason": "none"}, 0)],
        )
        metric(
            "ehswatch_mqtt_messages_total",
            "counter",
            "MQTT messages received.",
            [({}, service.mqtt.stats.messages)],
        )
    if service.modbus is not None:
        metric(
            "ehswatch_modbus_errors_total",
            "counter",
            "Modbus polls that lost the device.",
            [({"device": d}, s.errors) for d, s in service.modbus.stats.items()],
        )
    metric(
        "ehswatch_alarms_active",
        "gauge",
        "Open alarms whose condition holds.",
        [({}, sum(1 for a in service.alarms.open.values() if a.active))],
    )
    metric(
        "ehswatch_alarms_unacknowledged",
        "gauge",
        "Open alarms not acknowledged.",
        [({}, sum(1 for a in service.alarms.open.values() if a.unacked))],
    )
    if service.sink is not None:
        s = service.sink.stats
        metric(
            "ehswatch_sink_spool_bytes",
            "gauge",
            "Telemetry waiting on disk.",
            [({}, s.spool_bytes)],
        )
        metric(
            "ehswatch_sink_points_total",
            "counter",
            "Points by fate.",
            [
                ({"fate": "written"}, s.points_written),
                ({"fate": "spooled"}, s.points_spooled),
                ({"fate": "replayed"}, s.points_replayed),
                ({"fate": "dropped"}, s.points_dropped),
                ({"fate": "rejected"}, s.points_rejected),
            ],
        )
        metric(
            "ehswatch_sink_dropped_total",
            "counter",
            "Points lost, by reason (spool_full, spool_unwritable, spool_corrupt, memory_full).",
            [({"reason": r}, n) for r, n in sorted(s.dropped_by_reason.items())]
            or [({"reason": "none"}, 0)],
        )
        metric(
            "ehswatch_sink_memory_points",
            "gauge",
            "Telemetry waiting in memory (bounded by influxdb.memory_max_points).",
            [({}, s.memory_points)],
        )
        metric(
            "ehswatch_sink_server_up",
            "gauge",
            "1 while InfluxDB takes writes.",
            [({}, int(s.server_up))],
        )
        metric(
            "ehswatch_sink_spool_ok",
            "gauge",
            "1 while the spool can be written.",
            [({}, int(s.spool_ok))],
        )
    if service.interlock is not None:
        states = service.interlock.states.values()
        metric(
            "ehswatch_interlocks_tripped",
            "gauge",
            "Zones latched tripped.",
            [({}, sum(1 for z in states if z.tripped))],
        )
        metric(
            "ehswatch_interlock_output_faults",
            "gauge",
            "Zones whose PLC did not confirm.",
            [({}, sum(1 for z in states if z.output_fault))],
        )
    return families


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(families: list[Family]) -> str:
    """Prometheus text exposition format."""
    lines: list[str] = []
    for name, kind, help_, samples in families:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")
    return "\n".join(lines) + "\n"
