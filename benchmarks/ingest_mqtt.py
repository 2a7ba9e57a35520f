"""MQTT intake: readings per second that reach the evaluator as batches. Prints one JSON.

A mosquitto broker on a free loopback port; `mosquitto_pub -l` (C) floods it with one
message per line. Measured in this one run, each from the subscriber's first to its last
message:

- raw_broker_msgs_per_s: the broker's delivery rate to `mosquitto_sub` (C);
- single_readings_per_s: `MqttCollector` + an evaluator stage draining the queue into
  `Evaluator.process`, one reading per message ({"v": …, "ts": …, "q": 0});
- batch_readings_per_s: the same with 100 readings per message on ehs/telemetry;
- aiomqtt_readings_per_s: a plain aiomqtt loop (async for message, json.loads), for
  comparison; it is what `MqttCollector` replaces on the intake path.

ratio_to_raw = single_readings_per_s / raw_broker_msgs_per_s. Messages are published at
QoS 0 to subscriptions at QoS 1 (so delivery is QoS 0 for every subscriber alike).

Acknowledge after durable (`--durable`, the default): published and delivered at QoS 1
instead, and the collector's path is the service's with an InfluxDB section — the stage
hands each batch to an `InfluxSink` writing to a real VictoriaMetrics, marks it, and the
PUBACKs wait for the sink's durable watermark. `mosquitto_sub` (raw) acknowledges on
arrival. The sink flushes every `flush_interval_ms` = 1000 (the default) or within
`ack_flush_s` when acks wait; `ack_wait_max_s` is the longest arrival-to-PUBACK wait.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402
import numpy as np  # noqa: E402

from ehswatch.config import InfluxSettings  # noqa: E402
from ehswatch.ingest.influx import InfluxSink, InfluxWriter  # noqa: E402
from ehswatch.ingest.lineprotocol import LineEncoder  # noqa: E402
from ehswatch.ingest.mqtt import MqttCollector  # noqa: E402
from ehswatch.ingest.mqtt_wire import SessionOptions  # noqa: E402
from ehswatch.ingest.payloads import TelemetryDecoder  # noqa: E402
from ehswatch.ingest.queue import ReadingQueue  # noqa: E402
from ehswatch.ingest.spool import Spool  # noqa: E402
from ehswatch.thresholds import Evaluator, SensorThresholds, ThresholdTable  # noqa: E402
from tests.servers import Mosquitto, VictoriaMetrics, find_binary  # noqa: E402

SENSORS = [f"S-{i}" for i in range(100)]
T0_MS = 1_764_000_000_000


def write_lines(path: Path, batch: bool, messages: int) -> None:
    rng = np.random.default_rng(3)
    with path.open("w", encoding="utf-8") as f:
        for m in range(messages):
            if batch:
                items = [
                    {"id": SENSORS[k], "v": round(float(rng.normal(4, 0.3)), 3), "ts": T0_MS + m}
                    for k in range(100)
                ]
                f.write(json.dumps(items, separators=(",", ":")) + "\n")
            else:
                v = round(float(rng.normal(4, 0.3)), 3)
                f.write(f'{{"v":{v},"ts":{T0_MS + m},"q":0}}\n')


QOS = "0"  # set to "1" by --durable


def publish(port: int, topic: str, lines: Path) -> subprocess.Popen[bytes]:
    pub = find_binary("mosquitto_pub", "mosquitto-clients")
    return subprocess.Popen(
        # -M: mosquitto_pub's own in-flight window (default 20) would be the bottleneck.
        [pub, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", QOS, "-M", "20000", "-l"],
        stdin=lines.open("rb"),
    )


def raw_rate(port: int, topic: str, lines: Path, n: int) -> tuple[float, int]:
    sub = find_binary("mosquitto_sub", "mosquitto-clients")
    proc = subprocess.Popen(
        [sub, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1", "-C", str(n), "-W", "60"],
        stdout=subprocess.PIPE,
    )
    time.sleep(0.5)
    publisher = publish(port, topic, lines)
    assert proc.stdout is not None
    count, first, last = 0, 0.0, 0.0
    while count < n:
        chunk = proc.stdout.read1(1 << 20)  # type: ignore[attr-defined]
        if not chunk:
            break
        now = time.perf_counter()
        if not count:
            first = now
        count += chunk.count(b"\n")
        last = now
    proc.wait()
    publisher.wait()
    return count / (last - first), count


def thresholds() -> ThresholdTable:
    return ThresholdTable.build(
        [
            SensorThresholds(sensor_id=s, high=(10.0, 20.0, 40.0), deadband=0.5, stale_after_s=1e9)
            for s in SENSORS
        ]
    )


def make_sink(url: str, spool: Path) -> InfluxSink:
    settings = InfluxSettings(url=url, token="bench", org="ehs", bucket="telemetry")
    return InfluxSink(
        writer=InfluxWriter(settings),
        encoder=LineEncoder("plant-1", [(s, "zone-1", "dust") for s in SENSORS]),
        spool=Spool(spool, 1 << 30),
        batch_size=settings.batch_size,
        flush_interval_s=settings.flush_interval_ms / 1000,
    )


async def collector_rate(
    port: int,
    topic: str,
    lines: Path,
    n: int,
    client_id: str,
    sink: InfluxSink | None = None,
    stats: dict[str, float] | None = None,
) -> tuple[float, int]:
    table = thresholds()
    evaluator = Evaluator(table, start_ts=T0_MS / 1000)
    queue = ReadingQueue()
    decoder = TelemetryDecoder({}, table.index, "ehs")
    options = SessionOptions(host="127.0.0.1", port=port, client_id=client_id, clean_session=True)
    count, first, last = 0, 0.0, 0.0
    collector = MqttCollector(options=options, decoder=decoder, queue=queue)
    if sink is not None:
        collector.ack_after_durable(sink.on_durable)
        await sink.__aenter__()
    async with collector:
        while not collector.stats.connected:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        publisher = publish(port, topic, lines)
        deadline = time.perf_counter() + 60
        while count < n and time.perf_counter() < deadline:
            batch = await queue.drain(timeout=1.0)
            if not len(batch):
                if publisher.poll() is not None and count:
                    break
                continue
            ev = evaluator.process(batch)  # the evaluator is part of the measured path
            if sink is not None:  # as the stage does with storage configured
                sink.submit(batch, ev)
                sink.mark(queue.drained)
            now = time.perf_counter()
            if not count:
                first = now
            count += len(batch)
            last = now
        publisher.wait()
    if sink is not None:
        await sink.__aexit__(None, None, None)
        if stats is not None:
            stats["ack_wait_max_s"] = round(collector.stats.ack_wait_max_s, 3)
            stats["acks_waiting_at_end"] = collector.stats.acks_waiting
            stats["points_written"] = sink.stats.points_written
    return count / (last - first), count


async def aiomqtt_rate(port: int, topic: str, lines: Path, n: int) -> tuple[float, int]:
    count, first, last = 0, 0.0, 0.0
    values: list[float] = []
    async with aiomqtt.Client("127.0.0.1", port, max_queued_incoming_messages=0) as client:
        await client.subscribe(topic, qos=1)
        await asyncio.sleep(0.2)
        publisher = publish(port, topic, lines)
        try:
            async with asyncio.timeout(60):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    values.append(float(json.loads(message.payload)["v"]))
                    now = time.perf_counter()
                    if not count:
                        first = now
                    count += 1
                    last = now
                    if count >= n:
                        break
        except TimeoutError:
            pass
        publisher.wait()
    return count / (last - first), count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--batch-messages", type=int, default=4_000)
    ap.add_argument(
        "--durable",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="QoS 1 delivery; PUBACK after the sink's durable watermark (default)",
    )
    args = ap.parse_args()
    global QOS
    QOS = "1" if args.durable else "0"
    durable: dict[str, dict[str, float]] = {"single": {}, "batch": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        single, batch = work / "single.txt", work / "batch.txt"
        write_lines(single, batch=False, messages=args.messages)
        write_lines(batch, batch=True, messages=args.batch_messages)
        (work / "vm").mkdir()
        with Mosquitto(work) as broker, VictoriaMetrics(work / "vm") as vm:

            def sink(name: str) -> InfluxSink | None:
                return make_sink(vm.url, work / f"spool-{name}") if args.durable else None

            raw, raw_n = raw_rate(broker.port, "ehs/telemetry/S-0", single, args.messages)
            one, one_n = asyncio.run(
                collector_rate(
                    broker.port,
                    "ehs/telemetry/S-0",
                    single,
                    args.messages,
                    "bench-1",
                    sink("single"),
                    durable["single"],
                )
            )
            many, many_n = asyncio.run(
                collector_rate(
                    broker.port,
                    "ehs/telemetry",
                    batch,
                    args.batch_messages * 100,
                    "bench-2",
                    sink("batch"),
                    durable["batch"],
                )
            )
            plain, plain_n = asyncio.run(
                aiomqtt_rate(broker.port, "ehs/telemetry/S-0", single, args.messages)
            )
    print(
        json.dumps(
            {
                "raw_broker_msgs_per_s": round(raw),
                "single_readings_per_s": round(one),
                "batch_readings_per_s": round(many),
                "ratio_to_raw": round(one / raw, 3),
                "aiomqtt_readings_per_s": round(plain),
                "aiomqtt_ratio_to_raw": round(plain / raw, 3),
                "messages": args.messages,
                "delivered": {"raw": raw_n, "single": one_n, "batch": many_n, "aiomqtt": plain_n},
                "batch_messages": args.batch_messages,
                "readings_per_batch_message": 100,
                "qos": int(QOS),
                "ack_after_durable": durable if args.durable else None,
            }
        )
    )


if __name__ == "__main__":
    main()
