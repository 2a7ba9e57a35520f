"""Real servers for the tests and benchmarks, on loopback ports picked at run time.

A missing server binary is a failure with a clear message, never a skip: `make test`
installs the Debian packages (as root), and CI must prove the real thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self


class ServerMissing(RuntimeError):
    pass


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on, and never one this process handed out before:
    the kernel may offer a just-closed port again, and two servers of one test would
    then be given the same port before either binds it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listening on 127.0.0.1:{port} after {timeout} s"
                ) from None
            time.sleep(0.02)


def find_binary(name: str, package: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServerMissing(
        f"{name} is not installed: `make test` installs the Debian package {package} when run "
        f"as root (or: apt-get install {package})"
    )


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def make_certificates(workdir: Path) -> Certificates:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl CLI)."""
    openssl = find_binary("openssl", "openssl")

    def sh(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=workdir, check=True, capture_output=True)

    sh(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=ehswatch test CA",
    )
    sh(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (workdir / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n", encoding="utf-8")
    sh(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )
    return Certificates(
        ca=workdir / "ca.crt", cert=workdir / "server.crt", key=workdir / "server.key"
    )


class ServerProcess:
    """A server binary run as a child process on `self.port`: `start`, `stop` (terminate,
    then kill), `restart` on the same port and data, and use as a context manager."""

    port: int
    _log: Path | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        if self._log is not None:
            with self._log.open("ab") as log:
                self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                    self.command(), stdout=log, stderr=log
                )
        else:
            self._proc = subprocess.Popen(
                self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        wait_listening(self.port, timeout=20)

    def stop(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Mosquitto(ServerProcess):
    """A mosquitto broker on a free loopback port; `restart()` keeps the port.

    With `users`, anonymous clients are refused and these name/password pairs accepted;
    with `tls`, the listener speaks TLS with that server certificate.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        persistence: bool = False,
        users: dict[str, str] | None = None,
        tls: Certificates | None = None,
    ) -> None:
        self.binary = find_binary("mosquitto", "mosquitto")
        self.port = free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        # As root, mosquitto would switch to its own user and lose access to these files.
        lines = [f"listener {self.port} 127.0.0.1"] + (["user root"] if os.geteuid() == 0 else [])
        if users:
            passwd = workdir / "passwd"
            tool = find_binary("mosquitto_passwd", "mosquitto")
            for k, (name, password) in enumerate(users.items()):
                flags = ["-c"] if k == 0 else []
                subprocess.run(
                    [tool, *flags, "-b", str(passwd), name, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
        lines += [
            # Let a persistent session hold a real backlog while the collector is away.
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            # ehswatch acknowledges after storage (~0.1 s): let that many be in flight.
            "max_inflight_messages 20000",
            # As deploy/mosquitto.conf: no Nagle delay on small packets (trip latency).
            "set_tcp_nodelay true",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {workdir}/",
            f"log_dest file {workdir}/mosquitto.log",
        ]
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.conf)]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class VictoriaMetrics(ServerProcess):
    """VictoriaMetrics on a free loopback port: the server behind the InfluxDB v2 write
    API in our tests, read back through its export API. `restart()` keeps port and data."""

    def __init__(self, workdir: Path, *, max_line_size: int | None = None) -> None:
        self.binary = find_binary("victoria-metrics", "victoria-metrics")
        self.port = free_port()
        self.data = workdir / "vm-data"
        self.args = [
            self.binary,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.data}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-loggerLevel=ERROR",
        ]
        if max_line_size is not None:
            self.args.append(f"-influx.maxLineSize={max_line_size}")
        self._log = workdir / "victoria-metrics.log"

    def command(self) -> list[str]:
        return self.args

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def export(self, selector: str, settle_s: float = 5.0) -> list[dict[str, Any]]:
        """Every series matching a PromQL selector, as VictoriaMetrics exports them.

        A series written for the first time shows in queries only about a second later
        (its index entry is flushed on a timer), so this asks until two answers half a
        second apart agree, for at most `settle_s`.
        """
        # `end` a day ahead: by default the export stops at "now" and would miss points a
        # test stamped a moment in the future.
        query = urllib.parse.urlencode({"match[]": selector, "end": int(time.time()) + 86400})
        deadline = time.monotonic() + settle_s
        previous: list[dict[str, Any]] | None = None
        while True:
            urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()
            with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=30) as resp:
                got = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
            got.sort(key=lambda s: sorted(s["metric"].items()))
            if (got and got == previous) or time.monotonic() > deadline:
                return got
            previous = got
            time.sleep(0.5)

    def count(self, promql: str, settle_s: float = 10.0) -> int:
        """The value of an instant PromQL query that yields one number (e.g. a
        `count_over_time` sum), asked until two answers half a second apart agree."""
        deadline = time.monotonic() + settle_s
        previous: int | None = None
        while True:
            urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()
            query = urllib.parse.urlencode({"query": promql, "time": int(time.time()) + 60})
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=60) as resp:
                result = json.loads(resp.read())["data"]["result"]
            got = int(float(result[0]["value"][1])) if result else 0
            if (got and got == previous) or time.monotonic() > deadline:
                return got
            previous = got
            time.sleep(0.5)


#: every service `start_service` started, so that none outlives its test (conftest)
STARTED_SERVICES: list[int] = []


async def start_service(
    config: Path, log: Path, extra_env: Mapping[str, str] | None = None
) -> asyncio.subprocess.Process:
    """`ehswatch run --config CONFIG` as a process of its own (to kill -9, to run under
    libfaketime, to measure from outside), its output appended to `log`. A test that
    fails before stopping it has it killed after (`reap_services`): a service left
    running would keep its MQTT client id on a port a later test's broker may get."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ehswatch",
            "run",
            "--config",
            str(config),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
    STARTED_SERVICES.append(proc.pid)
    return proc


def reap_services() -> list[int]:
    """Kill every service a test started that still runs (its desk part follows it: it
    dies with the control part); the pids that were still running."""
    alive = []
    for pid in STARTED_SERVICES:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        alive.append(pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    STARTED_SERVICES.clear()
    return alive
