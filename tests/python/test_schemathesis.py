"""schemathesis (property-based tests generated from the served spec) against
the gateway in front of simulated upstreams: once without client keys (the
demo) and once with them, with every check schemathesis has. The only check
switched off anywhere is named, with its reason, in schemathesis.toml beside
this file (positive data acceptance on /mcp, a stateful protocol).

The seed is fixed so that a failure reproduces; raise MAX_EXAMPLES locally
to search wider."""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BINARY, listening_ports, stop
from test_ui import get, start_upstream

HERE = Path(__file__).resolve().parent
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
KEY = "schemathesis-key-0123456789"
SEED = "20261202"
MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "50")


def schemathesis(base: str, *extra: str) -> subprocess.CompletedProcess:
    """Runs every check against `base`; its output says what failed, with curl lines."""
    return subprocess.run(
        [str(SCHEMATHESIS), "run", f"{base}/openapi.json", "--url", base,
         "--seed", SEED, "--max-examples", MAX_EXAMPLES, "--no-color", *extra],
        cwd=HERE, capture_output=True, text=True, timeout=600,
    )


def test_the_spec_holds_without_keys(gateway):
    result = schemathesis(gateway)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-2000:]
    assert "13 passed" in result.stdout, result.stdout[-3000:]


@pytest.fixture(scope="module")
def keyed_gateway():
    """A gateway with a client key, in front of one simulated upstream."""
    upstream, url = start_upstream()
    gateway = None
    try:
        config = Path(tempfile.mkdtemp(prefix="schemathesis-")) / "gateway.yaml"
        config.write_text(
            'listen: "127.0.0.1:0"\n'
            f'auth:\n  keys: ["{KEY}"]\n'
            "health_check: {interval: 1s, timeout: 500ms}\n"
            f'upstreams:\n  - name: sim\n    base_url: "{url}"\n'
        )
        gateway = subprocess.Popen([str(BINARY), "--config", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for port in listening_ports(gateway.pid):
                try:
                    with get(f"http://127.0.0.1:{port}/ping") as r:
                        if r.status == 200:
                            yield f"http://127.0.0.1:{port}"
                            return
                except OSError:
                    pass
            time.sleep(0.1)
        pytest.fail("the keyed gateway did not become ready")
    finally:
        if gateway is not None:
            stop(gateway)
        stop(upstream)


def test_the_spec_holds_with_keys(keyed_gateway):
    # With the key, and ignored_auth checks that each secured operation
    # refuses a request without it.
    result = schemathesis(keyed_gateway, "--header", f"Authorization: Bearer {KEY}")
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-2000:]
    assert "13 passed" in result.stdout, result.stdout[-3000:]
