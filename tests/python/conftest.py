"""Fixtures for tests that drive the real gateway binary with real clients.

`gateway` starts `target/debug/context7-lb --demo` (three simulated vLLM
upstreams in the same process) listening on 127.0.0.1 port 0, so that the
kernel picks the port and nobody can take it in between (no bind, drop and
rebind); the port is read from /proc once the process listens. It waits until
all three upstreams are healthy, and stops it after the last test.
`cargo build` (or `cargo test`) must have built the binary; CONTEXT7_LB_BIN
points at another one.
"""

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("CONTEXT7_LB_BIN", REPO / "target" / "debug" / "context7-lb"))
START_TIMEOUT_S = 30.0
DEMO_UPSTREAMS = 3


def listening_ports(pid: int) -> list[int]:
    """The TCP ports process `pid` listens on, from /proc (Linux)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
        ports = []
        for table in ("tcp", "tcp6"):
            with open(f"/proc/{pid}/net/{table}") as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    # State 0A is LISTEN.
                    if fields[3] == "0A" and fields[9] in inodes:
                        ports.append(int(fields[1].rsplit(":", 1)[1], 16))
        return ports
    except OSError:
        return []


def is_gateway(port: int) -> bool:
    """Whether the listener on `port` is the gateway (not one of its demo upstreams)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
            return json.load(response).get("service") == "context7-mcp"
    except (OSError, ValueError):
        return False


def healthy_upstreams(base: str) -> int:
    # No proxy: the gateway is on loopback whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{base}/ping", timeout=2) as response:
        return json.load(response)["upstreams"]["healthy"]


def stop(process: subprocess.Popen) -> None:
    """Stops a gateway (or simulated upstream) process: SIGINT is the fast
    shutdown; SIGTERM would wait out the grace period."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def gateway():
    """The base URL of a running demo gateway, such as http://127.0.0.1:41234."""
    if not BINARY.is_file():
        pytest.fail(f"{BINARY} does not exist: build it first (cargo build)")
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        [str(BINARY), "--demo", "--listen", "127.0.0.1:0"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "info"},
    )

    def output() -> str:
        log.seek(0)
        return log.read()

    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        base = None
        while True:
            if process.poll() is not None:
                pytest.fail(f"the gateway exited with {process.returncode}:\n{output()}")
            if base is None:
                ports = [p for p in listening_ports(process.pid) if is_gateway(p)]
                if ports:
                    base = f"http://127.0.0.1:{ports[0]}"
            try:
                if base is not None and healthy_upstreams(base) == DEMO_UPSTREAMS:
                    break
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                pytest.fail(f"the demo upstreams were not all healthy within {START_TIMEOUT_S}s:\n{output()}")
            time.sleep(0.1)
        yield base
    finally:
        stop(process)
        log.close()
