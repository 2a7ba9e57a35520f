"""A sink process that only replays its spool: the test kills it with SIGKILL mid-replay.

Usage: python -m tests.influx_replayer '<InfluxSettings as JSON>'
"""

from __future__ import annotations

import asyncio
import sys

from ehswatch.config import InfluxSettings
from ehswatch.ingest.influx import InfluxSink, InfluxWriter
from ehswatch.ingest.lineprotocol import LineEncoder
from ehswatch.ingest.spool import Spool


async def main(settings: InfluxSettings) -> None:
    sink = InfluxSink(
        writer=InfluxWriter(settings),
        encoder=LineEncoder("plant-1", []),
        spool=Spool(settings.spool_dir, 1 << 30),
    )
    async with sink:
        while sink.stats.spool_segments:
            await asyncio.sleep(0.01)


if __name__ == "__main__":
    asyncio.run(main(InfluxSettings.model_validate_json(sys.argv[1])))
