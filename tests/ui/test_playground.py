"""The playground page at ``/``, in a real headless Chromium against the real server.

The harness (Debian's ``chromium`` through Playwright) is in ``conftest.py``. Every
number the page shows is checked against the API's answer to the same request, exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page

from tests.conftest import Server
from tests.ui.conftest import Playground, open_playground

pytestmark = pytest.mark.browser

LOGITS_TYPED = "2.0, 4.3, 1.2, -3.1"
LOGITS = [2.0, 4.3, 1.2, -3.1]


@pytest.fixture
def playground(browser: BrowserContext, server: Server) -> Iterator[Playground]:
    """A fresh tab on ``/`` of the session's server (the default model only)."""
    with open_playground(browser, server) as seen:
        yield seen


# Resolves with the exact body of the request behind the bars, once the bars show the
# answer for `logits` at the temperature the page displays (the slider has settled).
# A function, not an expression: the page's CSP forbids eval.
SETTLED_BARS = """([logits]) => {
  const bars = document.querySelector("#bars");
  if (bars.dataset.state !== "ready") return null;
  const sent = JSON.parse(bars.dataset.request);
  const shown = Number(document.querySelector("#temperature-value").textContent);
  const same = JSON.stringify(sent.logits) === JSON.stringify(logits);
  return same && sent.temperature === shown ? bars.dataset.request : null;
}"""


def settled_request(page: Page) -> dict[str, Any]:
    """The body the page sent for the bars it shows, once they are up to date."""
    body: str = page.wait_for_function(SETTLED_BARS, arg=[LOGITS]).json_value()
    request: dict[str, Any] = json.loads(body)
    return request


def shown_probabilities(page: Page, selector: str) -> list[float]:
    """The exact numbers the page keeps in ``data-probability``."""
    texts: list[str] = page.eval_on_selector_all(
        selector, "elements => elements.map(e => e.dataset.probability)"
    )
    return [float(text) for text in texts]


def assert_bars_match_the_api(page: Page, client: httpx.Client) -> float:
    """The bars equal /softmax's answer to the same body; returns the temperature used."""
    request = settled_request(page)
    assert request["logits"] == LOGITS
    answer = client.post("/softmax", json=request)
    assert answer.status_code == 200
    expected = answer.json()
    assert shown_probabilities(page, "#bars .bar") == expected["probabilities"]
    assert page.locator("#bars .bar-row").nth(expected["argmax"]).get_attribute("class") == (
        "bar-row top"
    )
    assert float(page.text_content("#temperature-value") or "nan") == request["temperature"]
    temperature: float = request["temperature"]
    return temperature


def test_softmax_bars_equal_the_api_answer_as_logits_and_temperature_change(
    playground: Playground, client: httpx.Client
) -> None:
    page = playground.page
    logits = page.locator("#logits")
    logits.clear()
    logits.press_sequentially(LOGITS_TYPED)  # key by key, through the debounce
    page.locator("#temperature").fill("0")  # log10(T) = 0
    assert assert_bars_match_the_api(page, client) == 1
    at_one = shown_probabilities(page, "#bars .bar")
    assert page.text_content("#temperature-value") == "1.00"

    # Drag the slider's thumb from the middle (T = 1) to 80 % of the way (T ~ 16).
    box = page.locator("#temperature").bounding_box()
    assert box is not None
    middle_y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, middle_y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.8, middle_y, steps=8)
    page.mouse.up()
    hot = assert_bars_match_the_api(page, client)
    assert 5 < hot < 50
    flatter = shown_probabilities(page, "#bars .bar")
    assert max(flatter) < max(at_one)

    # The keyboard's Home: T = 0.01, where the small probabilities are ~1e-100.
    page.locator("#temperature").press("Home")
    assert assert_bars_match_the_api(page, client) == 0.01
    assert min(shown_probabilities(page, "#bars .bar")) < 1e-90
    playground.assert_clean()


def test_softmax_errors_from_the_api_are_shown(
    playground: Playground, client: httpx.Client
) -> None:
    page = playground.page
    error = page.locator("#softmax-error")
    page.fill("#logits", "1, abc")
    page.wait_for_selector("#bars[data-state=error]")
    answer = client.post("/softmax", json={"logits": [1, "abc"], "temperature": 1})
    assert answer.status_code == 422
    assert error.is_visible()
    assert error.text_content() == f"422: {answer.json()['error']}"

    page.fill("#logits", LOGITS_TYPED)
    assert_bars_match_the_api(page, client)
    assert error.is_hidden()
    # The 422 the page provoked is the server's answer, not a page error: only it is logged.
    assert all("422" in problem for problem in playground.problems)
    playground.problems.clear()
    playground.assert_clean()


def pixel_of(page: Page, x: float, y: float) -> tuple[float, float]:
    """Where the data point (x, y) is on the screen, from the extent the map reports."""
    x_min, x_max, y_min, y_max = json.loads(page.get_attribute("#regions", "data-extent") or "")
    box = page.locator("#regions").bounding_box()
    assert box is not None
    return (
        box["x"] + (x - x_min) / (x_max - x_min) * box["width"],
        box["y"] + (y_max - y) / (y_max - y_min) * box["height"],
    )


# The canvas colour at CSS pixel offsets inside #regions, as "r,g,b".
CANVAS_COLOURS = """(points) => {
  const canvas = document.querySelector("#regions");
  const scale = canvas.width / canvas.getBoundingClientRect().width;
  const context = canvas.getContext("2d");
  return points.map(([x, y]) => {
    const [r, g, b] = context.getImageData(Math.floor(x * scale), Math.floor(y * scale), 1, 1).data;
    return `${r},${g},${b}`;
  });
}"""


def test_decision_regions_and_the_probabilities_of_a_clicked_point(
    playground: Playground, client: httpx.Client, tmp_path: Path
) -> None:
    page = playground.page
    page.wait_for_selector("#regions[data-state=ready]")
    assert page.input_value("#model-select") == "blobs"
    info = client.get("/models/blobs").json()

    # The map tells the four blobs apart: a different colour next to each training centre
    # (beside it: the centre itself carries a + marker).
    box = page.locator("#regions").bounding_box()
    assert box is not None
    beside = [pixel_of(page, cx + 1.5, cy + 1.5) for cx, cy in info["training"]["data"]["centers"]]
    offsets = [[px - box["x"], py - box["y"]] for px, py in beside]
    colours = page.evaluate(CANVAS_COLOURS, offsets)
    assert len(set(colours)) == 4, colours
    assert "255,255,255" not in colours

    page.mouse.click(*pixel_of(page, 15.0, 0.0))
    page.wait_for_selector("#point-probabilities[data-state=ready]")
    panel = page.locator("#point-probabilities")
    x_text = panel.get_attribute("data-x") or "nan"
    y_text = panel.get_attribute("data-y") or "nan"
    x, y = float(x_text), float(y_text)
    assert abs(x - 15.0) < 0.2
    assert abs(y) < 0.2
    shown = shown_probabilities(page, "#point-probabilities [data-probability]")
    answer = client.post("/predict", json={"instances": [[x, y]]})
    assert answer.status_code == 200
    expected = answer.json()["predictions"][0]
    assert shown == expected["probabilities"]
    assert max(range(len(shown)), key=shown.__getitem__) == 0
    assert panel.get_attribute("data-label") == expected["label"] == "0"
    assert page.text_content("#point-coordinates") == f"x1 = {x_text}, x2 = {y_text}"

    page.fill("#logits", LOGITS_TYPED)  # for the screenshot: both halves in use
    settled_request(page)
    screenshot = tmp_path / "playground.png"
    page.screenshot(path=screenshot, full_page=True)
    print(f"playground screenshot: {screenshot}")
    playground.assert_clean()


def test_the_page_and_its_assets_come_from_the_service_alone(client: httpx.Client) -> None:
    page = client.get("/", headers={"Accept": "text/html"})  # what a browser asks for
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["vary"] == "Accept"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    texts = [page.text]
    for asset, kind in (("playground.js", "javascript"), ("playground.css", "text/css")):
        response = client.get(f"/playground/static/{asset}")
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
        texts.append(response.text)
    for text in texts:
        assert re.search(r"https?://|url\(|@import", text) is None
    # documented as what other clients get there (KServe's V1 liveness), and as the page
    root = client.get("/openapi.json").json()["paths"]["/"]["get"]["responses"]["200"]
    assert set(root["content"]) == {"application/json", "text/html"}
