"""The gateway in front of llama.cpp's own OpenAI-compatible server.

Two llama.cpp servers (the `xllamacpp` wheel, each in a process of its own,
see llamacpp_server.py) serve a tiny random-weight llama model that
tiny_gguf.py writes at test time: no download, nothing leaves 127.0.0.1. The
gateway (a YAML config, health probed on llama.cpp's /health) is driven with
research, chat and a stream through the official `openai` SDK, /v1/models,
then with one server killed (SIGKILL) and one frozen (SIGSTOP).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from openai import OpenAI

from conftest import BINARY, is_gateway, listening_ports
from tiny_gguf import write_tiny_llama

HERE = Path(__file__).resolve().parent
SERVED = "tiny-llama"
WAIT_S = 30.0
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, timeout: float = 5.0):
    try:
        with OPENER.open(url, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def post_json(url: str, body: dict, timeout: float = 20.0):
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with OPENER.open(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


class Process:
    """A child process with its output in a temporary file, killed on stop."""

    def __init__(self, argv: list[str], env: dict | None = None):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        self.pid = self.process.pid

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:]

    def send(self, sig: int) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)  # a frozen process never handles SIGINT
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


def start_llamacpp(model: Path, directory: Path, name: str) -> tuple[Process, str]:
    """A llama.cpp server on 127.0.0.1 port 0; its URL as the server reported it."""
    address_file = directory / f"{name}.address"
    server = Process([sys.executable, str(HERE / "llamacpp_server.py"), str(model), SERVED, str(address_file)])
    try:
        deadline = time.monotonic() + WAIT_S
        while not address_file.exists():
            if server.process.poll() is not None:
                raise AssertionError(f"llama.cpp server {name} exited with {server.process.returncode}:\n{server.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"llama.cpp server {name} did not listen within {WAIT_S}s:\n{server.output()}")
            time.sleep(0.05)
        url = address_file.read_text().strip()
        port = int(url.rsplit(":", 1)[1])
        # The port it reported is the one this process listens on.
        assert port in listening_ports(server.pid), (url, listening_ports(server.pid))
        return server, url
    except BaseException:
        server.stop()
        raise


def start_gateway(config: Path) -> tuple[Process, str]:
    if not BINARY.is_file():
        pytest.fail(f"{BINARY} does not exist: build it first (cargo build)")
    gateway = Process([str(BINARY), "--config", str(config)], env={**os.environ, "RUST_LOG": "info"})
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            if gateway.process.poll() is not None:
                raise AssertionError(f"the gateway exited with {gateway.process.returncode}:\n{gateway.output()}")
            ports = [p for p in listening_ports(gateway.pid) if is_gateway(p)]
            if ports:
                return gateway, f"http://127.0.0.1:{ports[0]}"
            if time.monotonic() > deadline:
                raise AssertionError(f"the gateway did not listen within {WAIT_S}s:\n{gateway.output()}")
            time.sleep(0.05)
    except BaseException:
        gateway.stop()
        raise


def wait_for(what: str, condition, timeout: float = WAIT_S, logs=()):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            details = "\n".join(p.output() for p in logs)
            raise AssertionError(f"not within {timeout}s: {what}\n{details}")
        time.sleep(0.1)


def upstream_states(base: str) -> dict[str, str]:
    status, body = get_json(f"{base}/status")
    assert status == 200, body
    return {u["name"]: u["state"] for u in body["upstreams"]}


class Stack:
    def __init__(self, base: str, servers: dict[str, Process], gateway: Process):
        self.base = base
        self.servers = servers
        self.gateway = gateway

    def client(self) -> OpenAI:
        return OpenAI(base_url=f"{self.base}/v1", api_key="any", max_retries=0, timeout=20)

    def logs(self):
        return [self.gateway, *self.servers.values()]


@contextlib.contextmanager
def llamacpp_stack():
    """Two llama.cpp servers "a" and "b" behind a gateway, both healthy."""
    processes: list[Process] = []
    gateway = None
    with tempfile.TemporaryDirectory(prefix="llamacpp-") as tmp:
        directory = Path(tmp)
        try:
            model = write_tiny_llama(directory / "tiny.gguf")
            servers, upstreams = {}, []
            for name in ("a", "b"):
                server, url = start_llamacpp(model, directory, name)
                processes.append(server)
                servers[name] = server
                upstreams.append({"name": name, "base_url": f"{url}/v1", "model": SERVED, "models": [SERVED]})
            config = {
                "listen": "127.0.0.1:0",
                "threads": 1,
                "research": {"model": SERVED},
                "upstreams": upstreams,
                # llama.cpp's server answers /health (200 once the model is
                # loaded, 503 while loading).
                "health_check": {"path": "/health", "interval": "500ms", "timeout": "1s"},
            }
            path = directory / "gateway.yaml"
            path.write_text(json.dumps(config))  # JSON is YAML
            gateway, base = start_gateway(path)
            stack = Stack(base, servers, gateway)
            wait_for(
                "both upstreams healthy",
                lambda: upstream_states(base) == {"a": "healthy", "b": "healthy"},
                logs=stack.logs(),
            )
            yield stack
        finally:
            if gateway is not None:
                gateway.stop(signal.SIGINT)  # the gateway's fast shutdown
            for process in processes:
                process.stop()


@pytest.fixture(scope="module")
def stack():
    with llamacpp_stack() as s:
        yield s


def research(base: str, query: str = "What is llama.cpp?", timeout: float = 20.0):
    return post_json(f"{base}/v1/research", {"query": query}, timeout=timeout)


def test_research_through_llamacpp(stack):
    status, body = research(stack.base)
    assert status == 200, body
    assert isinstance(body["result"], str) and body["result"], body
    assert body["model"] == SERVED
    assert body["tokens_used"] > 0
    assert body["latency_ms"] >= 0 and body["timestamp"]


def test_chat_completion_through_llamacpp(stack):
    answer = stack.client().chat.completions.create(
        model=SERVED, messages=[{"role": "user", "content": "hello world"}], max_tokens=16
    )
    message = answer.choices[0].message
    assert message.role == "assistant"
    assert message.content is not None
    assert answer.model == SERVED
    assert 0 < answer.usage.completion_tokens <= 16


def test_streamed_chat_completion_ends_with_done(stack):
    # Raw SSE first: the stream ends with data: [DONE].
    request = urllib.request.Request(
        f"{stack.base}/v1/chat/completions",
        data=json.dumps(
            {"model": SERVED, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16, "stream": True}
        ).encode(),
        headers={"content-type": "application/json"},
    )
    with OPENER.open(request, timeout=20) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode(errors="replace")
    events = [line for line in raw.splitlines() if line.startswith("data: ")]
    assert len(events) >= 2, raw
    assert events[-1] == "data: [DONE]", raw
    for event in events[:-1]:
        assert json.loads(event[len("data: "):])["object"] == "chat.completion.chunk"

    # The SDK reassembles it and stops at [DONE].
    stream = stack.client().chat.completions.create(
        model=SERVED, messages=[{"role": "user", "content": "hello"}], max_tokens=16, stream=True
    )
    chunks = list(stream)
    assert chunks and all(c.object == "chat.completion.chunk" for c in chunks)
    assert any(choice.finish_reason for c in chunks for choice in c.choices)


def test_models_lists_the_served_model(stack):
    assert SERVED in [m.id for m in stack.client().models.list()]


def test_a_killed_server_is_routed_around():
    with llamacpp_stack() as stack:
        for _ in range(4):  # both take traffic first
            status, body = research(stack.base)
            assert status == 200, body
        stack.servers["a"].send(signal.SIGKILL)
        stack.servers["a"].process.wait(timeout=10)
        failures = []
        client = stack.client()
        for i in range(20):
            status, body = research(stack.base, f"question {i}")
            if status != 200:
                failures.append((i, "research", status, body))
            try:
                client.chat.completions.create(
                    model=SERVED, messages=[{"role": "user", "content": f"hi {i}"}], max_tokens=16
                )
            except Exception as error:  # noqa: BLE001 - every failure is reported
                failures.append((i, "chat", repr(error)))
        assert not failures, failures
        wait_for(
            "the killed upstream unhealthy in /status",
            lambda: upstream_states(stack.base).get("a") == "unhealthy",
            timeout=10,
            logs=stack.logs(),
        )
        assert upstream_states(stack.base)["b"] == "healthy"


def test_a_frozen_server_costs_seconds_not_a_hang():
    with llamacpp_stack() as stack:
        frozen = stack.servers["a"]
        for _ in range(4):
            status, body = research(stack.base)
            assert status == 200, body
        answers: list[tuple[int, float, object]] = []
        lock = threading.Lock()

        def load(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            count = 0
            while time.monotonic() < deadline and count < 200:
                count += 1
                started = time.monotonic()
                try:
                    status, body = research(stack.base, f"q{count}", timeout=15)
                except OSError as error:
                    status, body = 0, repr(error)
                with lock:
                    answers.append((status, time.monotonic() - started, body))

        frozen.send(signal.SIGSTOP)
        try:
            workers = [threading.Thread(target=load, args=(8.0,)) for _ in range(3)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(timeout=40)
            assert not any(w.is_alive() for w in workers), "a load thread hung"
            state = upstream_states(stack.base)
        finally:
            frozen.send(signal.SIGCONT)
        failed = [(s, t, b) for s, t, b in answers if s != 200]
        assert answers and not failed, f"{len(failed)} of {len(answers)} failed: {failed[:5]}"
        slowest = max(t for _, t, _ in answers)
        assert slowest < 10, f"a request waited {slowest:.1f}s"
        assert state["a"] == "unhealthy", state
        assert state["b"] == "healthy", state
        # Thawed, it is probed healthy again.
        wait_for(
            "the thawed upstream healthy again",
            lambda: upstream_states(stack.base).get("a") == "healthy",
            timeout=10,
            logs=stack.logs(),
        )
