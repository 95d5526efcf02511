"""Fixtures for tests that drive the real gateway binary with real clients.

`gateway` starts `target/debug/context7-lb --demo` (three simulated vLLM
upstreams in the same process) on a free loopback port, waits until all three
are healthy, and stops it after the last test. `cargo build` (or `cargo test`)
must have built the binary; CONTEXT7_LB_BIN points at another one.
"""

import json
import os
import signal
import socket
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy_upstreams(base: str) -> int:
    # No proxy: the gateway is on loopback whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{base}/ping", timeout=2) as response:
        return json.load(response)["upstreams"]["healthy"]


@pytest.fixture(scope="session")
def gateway():
    """The base URL of a running demo gateway, such as http://127.0.0.1:41234."""
    if not BINARY.is_file():
        pytest.fail(f"{BINARY} does not exist: build it first (cargo build)")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        [str(BINARY), "--demo", "--listen", f"127.0.0.1:{port}"],
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
        while True:
            if process.poll() is not None:
                pytest.fail(f"the gateway exited with {process.returncode}:\n{output()}")
            try:
                if healthy_upstreams(base) == DEMO_UPSTREAMS:
                    break
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                pytest.fail(f"the demo upstreams were not all healthy within {START_TIMEOUT_S}s:\n{output()}")
            time.sleep(0.1)
        yield base
    finally:
        # SIGINT is the fast shutdown; SIGTERM would wait out the grace period.
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
