"""The operator's page `/ui` in a real browser: headless Chromium (Debian's
`chromium`), driven over the DevTools protocol.

A gateway with client keys sits in front of three simulated upstreams, each
its own process. The page is opened the way a browser user opens it, with the
key as HTTP Basic credentials; it must name every upstream, show one that is
killed as down within a few seconds, be usable with the keyboard, and log no
console error. A screenshot is written to target/ui-screenshot.png (the one in
docs/ comes from here).
"""

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websocket

from conftest import BINARY, REPO, listening_ports, stop

KEY = "ui-test-key-0123456789"
SCREENSHOT = REPO / "target" / "ui-screenshot.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# A killed upstream must show as down on the page within this.
DOWN_WITHIN_S = 8.0


def start_upstream() -> tuple[subprocess.Popen, str]:
    """A simulated vLLM upstream on a port the kernel picked, and its base URL."""
    process = subprocess.Popen(
        [str(BINARY), "--sim-upstream", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )
    line = process.stdout.readline().strip()
    if not line.startswith("simulated upstream on "):
        stop(process)
        pytest.fail(f"the simulated upstream did not start: {line!r}")
    return process, line.removeprefix("simulated upstream on ")


def get(url: str, headers: dict | None = None):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(urllib.request.Request(url, headers=headers or {}), timeout=5)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """(gateway base URL, {upstream name: its process}) with all three healthy."""
    upstreams = {}
    processes = []
    gateway = None
    try:
        for name in ("box-a", "box-b", "serverless"):
            process, url = start_upstream()
            processes.append(process)
            upstreams[name] = (process, url)
        config = tmp_path_factory.mktemp("ui") / "gateway.yaml"
        lines = [
            'listen: "127.0.0.1:0"',
            "auth:",
            f'  keys: ["{KEY}"]',
            "health_check: {interval: 1s, timeout: 500ms, unhealthy_threshold: 2}",
            "upstreams:",
        ]
        for name, (_, url) in upstreams.items():
            lines += [f"  - name: {name}", f'    base_url: "{url}"']
            if name == "serverless":
                lines += ["    tier: 1", "    pricing: {per_second: 0.0004, per_million_completion_tokens: 0.5}"]
            else:
                lines += ["    pricing: {per_second: 0.0001}"]
        config.write_text("\n".join(lines) + "\n")
        log = tempfile.TemporaryFile(mode="w+")
        gateway = subprocess.Popen(
            [str(BINARY), "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        processes.append(gateway)
        deadline = time.monotonic() + 30
        base = None
        while time.monotonic() < deadline:
            assert gateway.poll() is None, "the gateway exited"
            for port in listening_ports(gateway.pid):
                try:
                    with get(f"http://127.0.0.1:{port}/ping") as r:
                        ping = json.load(r)
                    if ping.get("upstreams", {}).get("healthy") == 3:
                        base = f"http://127.0.0.1:{port}"
                except (OSError, ValueError):
                    pass
            if base:
                break
            time.sleep(0.1)
        else:
            log.seek(0)
            pytest.fail("the upstreams were not all healthy in time:\n" + log.read())
        yield base, {name: p for name, (p, _) in upstreams.items()}
    finally:
        for process in reversed(processes):
            stop(process)


class Browser:
    """One headless Chromium page over the DevTools protocol; it keeps every
    console message, uncaught exception and failed load the page produced."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="ui-chromium-")
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", "--window-size=1280,800", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        # Port 0: Chromium binds a port the kernel picked and writes it here.
        active = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and active.read_text().count("\n") >= 1):
            assert self.process.poll() is None, "chromium exited"
            assert time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.1)
        port = int(active.read_text().splitlines()[0])
        with get(f"http://127.0.0.1:{port}/json/list") as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=10, suppress_origin=True)
        self.next_id = 0
        self.problems = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def _note(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.problems.append(("exception", params["exceptionDetails"].get("text"), json.dumps(params)[:400]))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
            self.problems.append(("console", params["type"], json.dumps(params["args"])[:400]))
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            self.problems.append(("log", params["entry"]["level"], params["entry"]["text"]))

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._note(message)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, within: float):
        """Polls `expression` until it is truthy; its value, or None in time."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        return None

    def key(self, key: str, code: str, key_code: int, text: str = ""):
        """Presses and releases a key, as the keyboard would (`text` is what
        it types: Enter's "\\r" is what activates a focused button)."""
        self.call("Input.dispatchKeyEvent", type="keyDown", key=key, code=code, text=text,
                  windowsVirtualKeyCode=key_code, nativeVirtualKeyCode=key_code)
        self.call("Input.dispatchKeyEvent", type="keyUp", key=key, code=code,
                  windowsVirtualKeyCode=key_code, nativeVirtualKeyCode=key_code)

    def close(self):
        try:
            self.ws.close()
        finally:
            self.process.kill()
            self.process.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (scripts/test.sh installs Debian's chromium)")
    b = Browser()
    try:
        yield b
    finally:
        b.close()


def states(browser: Browser) -> dict:
    return browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#rows tr')]"
        ".map(r => [r.dataset.upstream, r.dataset.state]))"
    ) or {}


def test_the_page_needs_the_key_and_asks_the_browser_for_it(fleet):
    base, _ = fleet
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(f"{base}/ui")
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"] == 'Basic realm="context7-lb", charset="UTF-8"'
    assert json.load(refused.value) == {"detail": "Missing API key: send Authorization: Bearer <key>"}
    basic = "Basic " + base64.b64encode(f"ops:{KEY}".encode()).decode()
    with get(f"{base}/ui", {"Authorization": basic}) as page:
        assert page.status == 200
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        html = page.read().decode()
    # Everything it needs is in the page: nothing is fetched from elsewhere.
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html


def test_the_page_names_every_upstream_and_shows_a_killed_one_going_down(fleet, browser):
    base, upstreams = fleet
    # Some traffic, so that shares, tokens and cost have something to show.
    for _ in range(6):
        with get_request(research_request(base)) as r:
            assert r.status == 200
    host = base.removeprefix("http://")
    browser.call("Page.navigate", url=f"http://ops:{KEY}@{host}/ui")
    shown = browser.wait_for("document.querySelectorAll('#rows tr').length === 3 && document.body.dataset.updates", 10)
    assert shown, f"the page showed no upstreams: {browser.evaluate('document.body.innerText')}"
    assert states(browser) == {"box-a": "up", "box-b": "up", "serverless": "up"}
    text = browser.evaluate("document.body.innerText")
    for expected in ("box-a", "box-b", "serverless", "tier 0", "tier 1"):
        assert expected in text, f"{expected!r} not on the page:\n{text}"
    # Six research answers on tier 0 at $0.0001 a second cost something.
    assert browser.evaluate("document.getElementById('cost').textContent") != "$0.000000"
    # The charts need two points of history (one every 5 s).
    charts = browser.wait_for("document.querySelectorAll('.chart svg path').length === 6", 12)
    assert charts, browser.evaluate("document.getElementById('charts').innerText")

    # Keyboard: Tab reaches the pause button, Enter presses it, and again.
    browser.evaluate("document.activeElement && document.activeElement.blur()")
    browser.key("Tab", "Tab", 9)
    assert browser.evaluate("document.activeElement.id") == "pause"
    browser.key("Enter", "Enter", 13, "\r")
    assert browser.evaluate("document.getElementById('pause').getAttribute('aria-pressed')") == "true"
    browser.key("Enter", "Enter", 13, "\r")
    assert browser.evaluate("document.getElementById('pause').getAttribute('aria-pressed')") == "false"
    assert browser.evaluate("[...document.querySelectorAll('#rows tr')].every(r => r.tabIndex === 0)")

    killed_at = time.monotonic()
    upstreams["box-b"].kill()
    upstreams["box-b"].wait()
    down = browser.wait_for("document.querySelector('#rows tr[data-upstream=\"box-b\"]')?.dataset.state === 'down'", DOWN_WITHIN_S)
    took = time.monotonic() - killed_at
    assert down, f"box-b not shown as down within {DOWN_WITHIN_S} s: {states(browser)}"
    print(f"box-b shown as down {took:.1f} s after it was killed")
    assert states(browser) == {"box-a": "up", "box-b": "down", "serverless": "up"}
    assert "down" in browser.evaluate("document.querySelector('#rows tr[data-upstream=\"box-b\"]').innerText")

    shot = browser.call("Page.captureScreenshot", format="png")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))

    # Tier 0 gone altogether: research spills to the serverless tier, and the
    # page says so.
    upstreams["box-a"].kill()
    upstreams["box-a"].wait()
    assert browser.wait_for("document.querySelector('#rows tr[data-upstream=\"box-a\"]')?.dataset.state === 'down'", DOWN_WITHIN_S)
    for _ in range(3):
        with get_request(research_request(base)) as r:
            assert r.status == 200
            assert r.headers["X-Upstream"] == "serverless"
    spilled = browser.wait_for("document.querySelector('#rows tr[data-upstream=\"serverless\"]').innerText.includes('3 spilled here')", 5)
    assert spilled, browser.evaluate("document.querySelector('#rows tr[data-upstream=\"serverless\"]').innerText")

    # Drain events that came after the last call, then check there were none bad.
    browser.evaluate("1")
    assert browser.problems == [], browser.problems


def research_request(base: str) -> urllib.request.Request:
    return urllib.request.Request(
        f"{base}/v1/research", data=b'{"query": "what is a gateway?"}',
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})


def get_request(request: urllib.request.Request):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(request, timeout=10)
