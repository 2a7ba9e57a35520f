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

from ehswatch.ingest.mqtt import MqttCollector  # noqa: E402
from ehswatch.ingest.mqtt_wire import SessionOptions  # noqa: E402
from ehswatch.ingest.payloads import TelemetryDecoder  # noqa: E402
from ehswatch.ingest.queue import ReadingQueue  # noqa: E402
from ehswatch.thresholds import Evaluator, SensorThresholds, ThresholdTable  # noqa: E402
from tests.servers import Mosquitto, find_binary  # noqa: E402

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


def publish(port: int, topic: str, lines: Path) -> subprocess.Popen[bytes]:
    pub = find_binary("mosquitto_pub", "mosquitto-clients")
    return subprocess.Popen(
        [pub, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "0", "-l"],
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


async def collector_rate(
    port: int, topic: str, lines: Path, n: int, client_id: str
) -> tuple[float, int]:
    table = thresholds()
    evaluator = Evaluator(table, start_ts=T0_MS / 1000)
    queue = ReadingQueue()
    decoder = TelemetryDecoder({}, table.index, "ehs")
    options = SessionOptions(host="127.0.0.1", port=port, client_id=client_id, clean_session=True)
    count, first, last = 0, 0.0, 0.0
    async with MqttCollector(options=options, decoder=decoder, queue=queue) as collector:
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
            evaluator.process(batch)  # the evaluator is part of the measured path
            now = time.perf_counter()
            if not count:
                first = now
            count += len(batch)
            last = now
        publisher.wait()
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        single, batch = work / "single.txt", work / "batch.txt"
        write_lines(single, batch=False, messages=args.messages)
        write_lines(batch, batch=True, messages=args.batch_messages)
        with Mosquitto(work) as broker:
            raw, raw_n = raw_rate(broker.port, "ehs/telemetry/S-0", single, args.messages)
            one, one_n = asyncio.run(
                collector_rate(broker.port, "ehs/telemetry/S-0", single, args.messages, "bench-1")
            )
            many, many_n = asyncio.run(
                collector_rate(
                    broker.port, "ehs/telemetry", batch, args.batch_messages * 100, "bench-2"
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
            }
        )
    )


if __name__ == "__main__":
    main()
