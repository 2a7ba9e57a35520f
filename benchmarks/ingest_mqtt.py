"""MQTT intake: how fast a QoS 1 backlog drains into the evaluator. Prints one JSON.

Why a backlog: with QoS 1 end to end, `mosquitto_pub` on this machine publishes far below
what a subscriber can take, so a live stream measures the publisher, and every subscriber
(raw or ours) gets the same rate. Queued at the broker for a persistent session, the
messages are delivered as fast as the subscriber acknowledges them: that is the rate the
plant cares about after a restart or a network cut.

A mosquitto broker on a free loopback port. Each subscriber first registers a persistent
session (clean session false, its own client id) subscribed at QoS 1; then
`PUBLISHERS` `mosquitto_pub -l` processes (one topic each, so each sensor's readings keep
their order) publish `--messages` readings at QoS 1; the broker queues them for every
session. Then each subscriber reconnects and drains its backlog, measured from the start
of its connection to its last message (for ours with a sink, to its last PUBACK):

- raw_broker_msgs_per_s: `mosquitto_sub -c` (C), which acknowledges on arrival;
- single_readings_per_s: `MqttCollector` + the service's stage path: each drained batch
  goes through `Evaluator.process`, is handed to an `InfluxSink` writing to a real
  VictoriaMetrics and marked, and the PUBACKs wait for the sink's durable watermark
  (acknowledge after durable); one reading per message ({"v": …, "ts": …, "q": 0});
- batch_readings_per_s: the same with 100 readings per message on ehs/telemetry;
- aiomqtt_readings_per_s: a plain aiomqtt loop (async for message, json.loads), for
  comparison; it is what `MqttCollector` replaces on the intake path.

ratio_to_raw = single_readings_per_s / raw_broker_msgs_per_s. `ack_wait_max_s` is the
longest arrival-to-PUBACK wait; the sink flushes within `ack_flush_s` while acks wait.
`--no-durable` drops the sink (PUBACK on hand-over), to show what durability costs.
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
PUBLISHERS = 4  # one topic (sensor) each; per-sensor order is kept
SINGLE_FILTER = "ehs/telemetry/+"


def write_lines(work: Path, batch: bool, messages: int) -> list[tuple[str, Path]]:
    """The publishers' input files: (topic, file) each."""
    rng = np.random.default_rng(3)
    if batch:
        path = work / "batch.txt"
        with path.open("w", encoding="utf-8") as f:
            for m in range(messages):
                items = [
                    {"id": SENSORS[k], "v": round(float(rng.normal(4, 0.3)), 3), "ts": T0_MS + m}
                    for k in range(100)
                ]
                f.write(json.dumps(items, separators=(",", ":")) + "\n")
        return [("ehs/telemetry", path)]
    out = []
    for k in range(PUBLISHERS):
        path = work / f"single-{k}.txt"
        with path.open("w", encoding="utf-8") as f:
            for m in range(messages // PUBLISHERS):
                v = round(float(rng.normal(4, 0.3)), 3)
                f.write(f'{{"v":{v},"ts":{T0_MS + m},"q":0}}\n')
        out.append((f"ehs/telemetry/{SENSORS[k]}", path))
    return out


def preload(port: int, files: list[tuple[str, Path]]) -> None:
    """Publish every file at QoS 1 and wait until the broker has taken them all."""
    pub = find_binary("mosquitto_pub", "mosquitto-clients")
    procs = [
        # -M: mosquitto_pub's own in-flight window (default 20) would be the bottleneck.
        subprocess.Popen(
            [pub, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1", "-M", "20000", "-l"],
            stdin=path.open("rb"),
        )
        for topic, path in files
    ]
    for proc in procs:
        if proc.wait(timeout=300):
            raise RuntimeError(f"mosquitto_pub exited with {proc.returncode}")


def mosquitto_sub(port: int, *extra: str) -> list[str]:
    sub = find_binary("mosquitto_sub", "mosquitto-clients")
    return [sub, "-h", "127.0.0.1", "-p", str(port), "-t", SINGLE_FILTER, "-q", "1", "-c",
            "-i", "bench-raw", *extra]  # fmt: skip


def raw_register(port: int) -> None:
    subprocess.run(mosquitto_sub(port, "-E"), check=True, timeout=30)


def raw_drain(port: int, n: int) -> tuple[float, int]:
    first = time.perf_counter()
    proc = subprocess.Popen(mosquitto_sub(port, "-C", str(n), "-W", "120"), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    count, last = 0, 0.0
    while count < n:
        chunk = proc.stdout.read1(1 << 20)  # type: ignore[attr-defined]
        if not chunk:
            break
        count += chunk.count(b"\n")
        last = time.perf_counter()
    proc.wait()
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


def collector(port: int, client_id: str, queue: ReadingQueue) -> MqttCollector:
    decoder = TelemetryDecoder({}, thresholds().index, "ehs")
    options = SessionOptions(host="127.0.0.1", port=port, client_id=client_id, clean_session=False)
    return MqttCollector(options=options, decoder=decoder, queue=queue)


async def wait_connected(c: MqttCollector) -> None:
    async with asyncio.timeout(10):
        while not c.stats.connected:
            await asyncio.sleep(0.01)


async def collector_register(port: int, client_id: str) -> None:
    async with collector(port, client_id, ReadingQueue()) as c:
        await wait_connected(c)  # connected means subscribed (SUBACK awaited)


async def collector_drain(
    port: int, client_id: str, n: int, sink: InfluxSink | None, stats: dict[str, float]
) -> tuple[float, int]:
    table = thresholds()
    evaluator = Evaluator(table, start_ts=T0_MS / 1000)
    queue = ReadingQueue()
    count, last = 0, 0.0
    c = collector(port, client_id, queue)
    if sink is not None:
        c.ack_after_durable(sink.on_durable)
        await sink.__aenter__()
    first = time.perf_counter()
    async with c:
        deadline = time.perf_counter() + 120
        while count < n and time.perf_counter() < deadline:
            batch = await queue.drain(within_s=1.0)
            if not len(batch):
                continue
            ev = evaluator.process(batch)  # the evaluator is part of the measured path
            if sink is not None:  # as the stage does with storage configured
                sink.submit(batch, ev)
                sink.mark(queue.drained)
            count += len(batch)
            last = time.perf_counter()
        if sink is not None:  # the backlog is done only when its last PUBACK is out
            async with asyncio.timeout(30):
                while c.stats.acks_waiting:
                    await asyncio.sleep(0.005)
            last = time.perf_counter()
    stats["ack_wait_max_s"] = round(c.stats.ack_wait_max_s, 3)
    stats["acks_waiting_at_end"] = c.stats.acks_waiting
    if sink is not None:
        await sink.__aexit__(None, None, None)
        st = sink.stats
        stats |= {
            "points_written": st.points_written,
            "points_spooled": st.points_spooled,
            "points_replayed": st.points_replayed,
            "points_dropped": st.points_dropped,
        }
    return count / (last - first), count


def aiomqtt_client(port: int) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1", port, identifier="bench-aiomqtt", clean_session=False,
        max_queued_incoming_messages=0,
    )  # fmt: skip


async def aiomqtt_register(port: int) -> None:
    async with aiomqtt_client(port) as client:
        await client.subscribe(SINGLE_FILTER, qos=1)


async def aiomqtt_drain(port: int, n: int) -> tuple[float, int]:
    count, last = 0, 0.0
    values: list[float] = []
    first = time.perf_counter()
    async with aiomqtt_client(port) as client:
        try:
            async with asyncio.timeout(120):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    values.append(float(json.loads(message.payload)["v"]))
                    count += 1
                    last = time.perf_counter()
                    if count >= n:
                        break
        except TimeoutError:
            pass
    return count / (last - first), count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--batch-messages", type=int, default=4_000)
    ap.add_argument(
        "--durable",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="PUBACK after the sink's durable watermark (default); else on hand-over",
    )
    args = ap.parse_args()
    n = args.messages // PUBLISHERS * PUBLISHERS
    durable: dict[str, dict[str, float]] = {"single": {}, "batch": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        single = write_lines(work, batch=False, messages=n)
        batch = write_lines(work, batch=True, messages=args.batch_messages)
        (work / "vm").mkdir()
        with Mosquitto(work) as broker, VictoriaMetrics(work / "vm") as vm:
            port = broker.port

            def sink(name: str) -> InfluxSink | None:
                return make_sink(vm.url, work / f"spool-{name}") if args.durable else None

            raw_register(port)
            asyncio.run(collector_register(port, "bench-1"))
            asyncio.run(aiomqtt_register(port))
            t = time.perf_counter()
            preload(port, single)
            publish_s = time.perf_counter() - t
            raw, raw_n = raw_drain(port, n)
            one, one_n = asyncio.run(
                collector_drain(port, "bench-1", n, sink("1"), durable["single"])
            )
            plain, plain_n = asyncio.run(aiomqtt_drain(port, n))
            asyncio.run(collector_register(port, "bench-2"))
            preload(port, batch)
            many, many_n = asyncio.run(
                collector_drain(
                    port, "bench-2", args.batch_messages * 100, sink("2"), durable["batch"]
                )
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
                "messages": n,
                "publish_msgs_per_s": round(n / publish_s),
                "delivered": {"raw": raw_n, "single": one_n, "batch": many_n, "aiomqtt": plain_n},
                "batch_messages": args.batch_messages,
                "readings_per_batch_message": 100,
                "qos": 1,
                "ack_after_durable": durable if args.durable else None,
            }
        )
    )


if __name__ == "__main__":
    main()
