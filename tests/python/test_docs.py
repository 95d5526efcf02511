"""The API explorers in a real browser (headless Chromium, over the DevTools
protocol): Swagger UI at /docs lists the operations and runs a research
request through "Try it out"; ReDoc at /redoc renders the same spec. Both
load nothing from elsewhere and log no console error."""

import json
import urllib.request

from test_ui import Browser, browser  # noqa: F401 (the fixture)


def click(browser: Browser, element_js: str) -> None:
    """A real mouse click in the middle of the element `element_js` names."""
    rect = browser.evaluate(
        f"(() => {{ const e = {element_js}; e.scrollIntoView({{block: 'center'}});"
        " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    x, y = rect
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


def research_block() -> str:
    return ("[...document.querySelectorAll('.opblock')].find(b => "
            "b.querySelector('.opblock-summary-method')?.textContent === 'POST' && "
            "b.querySelector('.opblock-summary-path')?.textContent.replace(/\\u200b/g, '') === '/v1/research')")


def test_swagger_ui_lists_the_operations_and_tries_out_research(gateway, browser):
    browser.call("Page.navigate", url=f"{gateway}/docs")
    listed = browser.wait_for("document.querySelectorAll('.opblock').length", 20)
    assert listed and listed >= 12, browser.evaluate("document.body.innerText")
    paths = browser.evaluate("[...document.querySelectorAll('.opblock-summary-path')].map(e => e.textContent.replace(/\\u200b/g, ''))")
    for path in ("/ping", "/v1/research", "/v1/chat/completions", "/mcp", "/status", "/ui", "/redoc"):
        assert path in paths, paths
    # Without client keys the gateway asks for none, and the page offers none.
    assert browser.evaluate("!document.querySelector('.btn.authorize')")

    click(browser, research_block() + ".querySelector('.opblock-summary')")
    assert browser.wait_for("!!" + research_block() + ".querySelector('.try-out__btn')", 5)
    click(browser, research_block() + ".querySelector('.try-out__btn')")
    body = browser.wait_for(research_block() + ".querySelector('textarea.body-param__text')?.value", 5)
    assert body and json.loads(body)["query"], body
    click(browser, research_block() + ".querySelector('.execute')")
    status = browser.wait_for(research_block() + ".querySelector('.live-responses-table tr.response .response-col_status')?.textContent.trim()", 20)
    assert status == "200", status
    answer = browser.evaluate(research_block() + ".querySelector('.live-responses-table tr.response .response-col_description pre')?.textContent")
    answer = json.loads(answer)
    assert set(answer) == {"result", "model", "tokens_used", "latency_ms", "timestamp"}, answer
    # The request went to this gateway, as the page's curl line says.
    curl = browser.evaluate(research_block() + ".querySelector('.curl-command')?.innerText")
    assert f"{gateway}/v1/research" in curl, curl
    browser.evaluate("1")
    assert browser.problems == [], browser.problems


def test_redoc_renders_the_spec(gateway, browser):
    browser.call("Page.navigate", url=f"{gateway}/redoc")
    title = browser.wait_for("document.querySelector('.api-info h1')?.textContent", 20)
    assert title and title.startswith("context7-lb"), browser.evaluate("document.body.innerText.slice(0, 500)")
    text = browser.wait_for("document.body.innerText.includes('/v1/research') && document.body.innerText", 10)
    assert text and "Research" in text
    browser.evaluate("1")
    assert browser.problems == [], browser.problems


def test_the_explorers_fetch_nothing_from_elsewhere(gateway):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for page in ("/docs", "/redoc"):
        with opener.open(f"{gateway}{page}", timeout=5) as r:
            html = r.read().decode()
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert "http://" not in html and "https://" not in html, page
