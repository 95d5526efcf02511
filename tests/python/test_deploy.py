"""Operator-facing documents checked by their real tools: the OpenAPI document
the gateway serves (openapi-spec-validator), the live metrics, alert rules and
scrape configuration (promtool, when scripts/test.sh could install it)."""

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from openapi_spec_validator import validate

REPO = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool could not be installed here")


def fetch(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return response.read()


def test_the_served_openapi_document_is_valid_3_1(gateway):
    spec = json.loads(fetch(f"{gateway}/openapi.json"))
    validate(spec)  # raises on any violation of the OpenAPI 3.1 schema
    assert spec["openapi"] == "3.1.0"
    root = json.loads(fetch(f"{gateway}/"))
    assert spec["info"]["version"] == root["version"]
    for path in ["/ping", "/v1/research", "/v1/chat/completions", "/v1/models", "/mcp", "/status", "/metrics"]:
        assert path in spec["paths"], path


@needs_promtool
def test_the_live_metrics_pass_promtool(gateway):
    # Some traffic first, so that histograms and labelled series exist.
    request = urllib.request.Request(
        f"{gateway}/v1/research",
        data=b'{"query": "promtool"}',
        headers={"Content-Type": "application/json"},
    )
    urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10).read()
    metrics = fetch(f"{gateway}/metrics")
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=metrics, capture_output=True)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()


@needs_promtool
def test_the_alert_rules_and_scrape_config_pass_promtool():
    for args in (["check", "rules", "deploy/alerts.yml"], ["check", "config", "deploy/prometheus.yml"]):
        result = subprocess.run([PROMTOOL, *args], cwd=REPO, capture_output=True)
        assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
