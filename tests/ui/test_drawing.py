"""The playground's drawing canvas for image models, in a real headless Chromium.

The server serves the session's default model (``blobs``) and ``digits``: a small 8x8x1
CNN that takes raw 0..255 pixels, built here and dropped in as a bare ``model.keras``
(served through Keras). The test draws with the mouse, catches the request the page
sends, sends its very body to the server again and checks that the page shows exactly
that answer; likewise for an uploaded file.
"""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from playwright.sync_api import BrowserContext, Page, Request

from tests.conftest import Server, TrainedRepository, start_server
from tests.ui.conftest import Playground, open_playground

pytestmark = pytest.mark.browser

#: The canvas's size in pixels (SKETCH_SIZE in playground.js), for an 8x8 model.
SKETCH = 224


def build_digits_model(path: Path) -> None:
    """A small untrained CNN like the digits example: 8x8x1 raw pixels, 10 classes.

    Random weights with a wide final layer, so that what is drawn visibly moves the
    probabilities; functional, with ``Rescaling`` first (the service reads the pixel
    range 0..255 from that).
    """
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape=(8, 8, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(10, kernel_initializer=keras.initializers.RandomNormal(0, 1))(x)
    model = keras.Model(inputs, keras.layers.Softmax()(x))
    path.parent.mkdir(parents=True)
    model.save(path)


@pytest.fixture(scope="module")
def image_server(
    trained: TrainedRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The real service on ``blobs`` (the default) and a bare ``digits/1/model.keras``."""
    workdir = tmp_path_factory.mktemp("images")
    shutil.copytree(trained.repository, workdir / "models")
    build_digits_model(workdir / "models" / "digits" / "1" / "model.keras")
    running = start_server(workdir, workdir / "server.log", SERVICE_DEFAULT_MODEL="blobs")
    yield running
    assert running.stop() == 0, running.output()


@pytest.fixture
def api(image_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=image_server.url, timeout=30) as http:
        yield http


@pytest.fixture
def playground(browser: BrowserContext, image_server: Server) -> Iterator[Playground]:
    """A fresh tab with ``digits`` selected and its drawing canvas shown."""
    with open_playground(browser, image_server) as seen:
        page = seen.page
        page.wait_for_selector("#regions[data-state=ready]")  # blobs first, the default
        page.select_option("#model-select", "digits")
        page.wait_for_selector("#drawing", state="visible")
        yield seen


def is_predict(request: Request) -> bool:
    return request.method == "POST" and request.url.endswith("/predict")


def predict_requests(playground: Playground) -> list[str]:
    return [url for url in playground.requests if url.endswith("/predict")]


def on_canvas(page: Page, points: tuple[tuple[float, float], ...]) -> list[tuple[float, float]]:
    """Viewport coordinates of ``points`` given as fractions of the canvas's width, height."""
    canvas = page.locator("#sketch")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    return [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]


def draw(page: Page, *points: tuple[float, float]) -> None:
    """One stroke with the mouse through ``points`` (fractions of the canvas's width, height)."""
    at = on_canvas(page, points)
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=10)
    page.mouse.up()


def shown(page: Page) -> list[float]:
    """The exact probabilities the image panel keeps in ``data-probability``."""
    texts: list[str] = page.eval_on_selector_all(
        "#image-probabilities [data-probability]", "cells => cells.map(c => c.dataset.probability)"
    )
    return [float(text) for text in texts]


def sent_image(request: Request) -> bytes:
    """The image file inside the page's ``{"instances": [{"b64": ...}]}`` body."""
    assert request.headers["content-type"] == "application/json"
    body = request.post_data_json
    assert isinstance(body, dict)
    assert list(body) == ["instances"]
    [instance] = body["instances"]
    assert list(instance) == ["b64"]
    return base64.b64decode(instance["b64"], validate=True)


def gray(data: bytes) -> npt.NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def assert_page_shows_the_answer_to(page: Page, api: httpx.Client, request: Request) -> Any:
    """The page shows exactly what the server answers to the request the page sent."""
    answer = api.post(
        httpx.URL(request.url).path,
        content=request.post_data_buffer,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    expected = answer.json()["predictions"][0]
    probabilities = shown(page)
    assert probabilities == expected["probabilities"]
    assert len(probabilities) == 10
    assert abs(sum(probabilities) - 1) < 1e-9
    panel = page.locator("#image-probabilities")
    assert panel.get_attribute("data-label") == expected["label"]
    rows = panel.locator("tbody tr")
    assert rows.nth(expected["argmax"]).get_attribute("class") == "top"
    assert rows.nth(expected["argmax"]).locator("td").first.text_content() == expected["label"]
    assert page.locator("#image-label strong").text_content() == expected["label"]
    return expected


def test_a_drawn_stroke_gets_the_probabilities_predict_gives_for_the_png_sent(
    playground: Playground, api: httpx.Client, tmp_path: Path
) -> None:
    page = playground.page
    assert page.locator("#map").is_hidden()
    assert page.locator("#point-panel").is_hidden()
    assert "8x8x1 images (pixel values 0 to 255)" in (page.text_content("#model-summary") or "")
    assert page.get_attribute("#image-probabilities", "data-state") == "idle"
    [blobs_map] = predict_requests(playground)  # the blobs map, before digits was chosen

    # A "1": one stroke down the middle, through the debounce (one request per stroke).
    with page.expect_request(is_predict) as caught:
        draw(page, (0.5, 0.12), (0.45, 0.5), (0.5, 0.88))
    page.wait_for_selector("#image-probabilities[data-state=ready]")
    request = caught.value
    assert predict_requests(playground) == [blobs_map, request.url]
    assert request.url.endswith("/models/digits/versions/1/predict")

    # The page sent the canvas: 224 x 224, white ink on black, the stroke in the middle.
    png = sent_image(request)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pixels = gray(png)
    assert pixels.shape == (SKETCH, SKETCH)
    assert pixels[SKETCH // 2, SKETCH // 2 - 15 : SKETCH // 2 + 5].max() == 255
    assert pixels[:, :60].max() == 0
    assert pixels[:, -60:].max() == 0
    assert 0.05 < (pixels > 127).mean() < 0.2

    expected = assert_page_shows_the_answer_to(page, api, request)
    assert page.get_attribute("#image-probabilities", "data-source") == "drawing"
    # The same PNG as a raw image body: the same answer.
    raw = api.post("/models/digits/predict", content=png, headers={"Content-Type": "image/png"})
    assert raw.json()["predictions"][0]["probabilities"] == expected["probabilities"]
    # What was drawn reached the model: a blank canvas gets other probabilities.
    blank = io.BytesIO()
    Image.new("L", (SKETCH, SKETCH)).save(blank, format="PNG")
    nothing = api.post(
        "/models/digits/predict", content=blank.getvalue(), headers={"Content-Type": "image/png"}
    )
    assert nothing.json()["predictions"][0]["probabilities"] != expected["probabilities"]

    # A second stroke (the base of the 1) is added to the first, and answered again.
    with page.expect_request(is_predict) as caught:
        draw(page, (0.3, 0.88), (0.7, 0.88))
    page.wait_for_selector("#image-probabilities[data-state=ready]")
    both = gray(sent_image(caught.value))
    assert both[SKETCH // 2, SKETCH // 2 - 15 : SKETCH // 2 + 5].max() == 255
    assert both[int(0.88 * SKETCH), 80:140].min() == 255
    assert_page_shows_the_answer_to(page, api, caught.value)
    assert len(predict_requests(playground)) == 3
    screenshot = tmp_path / "drawing.png"
    page.screenshot(path=screenshot, full_page=True)
    print(f"drawing screenshot: {screenshot}")
    playground.assert_clean()


def test_a_finger_draws_too(playground: Playground, api: httpx.Client) -> None:
    """A touch stroke, through Chromium's own input pipeline (CDP), not synthetic events:
    it draws, and an upward swipe does not scroll the page (it would, elsewhere)."""
    page = playground.page
    at = on_canvas(page, ((0.5, 0.8), (0.5, 0.5), (0.5, 0.2)))
    scrolled = page.evaluate("() => window.scrollY")
    cdp = page.context.new_cdp_session(page)
    touch = "Input.dispatchTouchEvent"
    with page.expect_request(is_predict) as caught:
        cdp.send(touch, {"type": "touchStart", "touchPoints": [{"x": at[0][0], "y": at[0][1]}]})
        for x, y in at[1:]:
            cdp.send(touch, {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
        cdp.send(touch, {"type": "touchEnd", "touchPoints": []})
    page.wait_for_selector("#image-probabilities[data-state=ready]")
    pixels = gray(sent_image(caught.value))
    assert pixels[int(0.25 * SKETCH) : int(0.75 * SKETCH), SKETCH // 2].min() == 255
    assert pixels[:, : SKETCH // 3].max() == 0
    assert page.evaluate("() => window.scrollY") == scrolled
    assert_page_shows_the_answer_to(page, api, caught.value)
    playground.assert_clean()


SKETCH_MAX = """() => {
  const canvas = document.querySelector("#sketch");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let max = 0;
  for (let i = 0; i < data.length; i += 4) max = Math.max(max, data[i], data[i + 1], data[i + 2]);
  return max;
}"""


def test_clear_wipes_the_drawing_and_the_result_and_sends_nothing(
    playground: Playground, api: httpx.Client
) -> None:
    page = playground.page
    with page.expect_request(is_predict):
        draw(page, (0.2, 0.2), (0.8, 0.2))  # a bar across the top
    page.wait_for_selector("#image-probabilities[data-state=ready]")
    assert page.evaluate(SKETCH_MAX) == 255
    sent = len(predict_requests(playground))

    page.locator("#sketch-clear").focus()
    page.keyboard.press("Enter")  # a real button: the keyboard works
    page.wait_for_selector("#image-probabilities[data-state=idle]", state="attached")
    assert page.evaluate(SKETCH_MAX) == 0
    assert page.locator("#image-probabilities tr").count() == 0
    assert page.locator("#image-label").is_hidden()
    assert page.text_content("#image-source") == "Draw something."

    # The next stroke starts from black: the cleared bar is not in the PNG sent.
    with page.expect_request(is_predict) as caught:
        draw(page, (0.5, 0.4), (0.5, 0.9))
    page.wait_for_selector("#image-probabilities[data-state=ready]")
    assert len(predict_requests(playground)) == sent + 1  # Clear itself sent nothing
    pixels = gray(sent_image(caught.value))
    assert pixels[: int(0.3 * SKETCH)].max() == 0
    assert pixels[int(0.6 * SKETCH), SKETCH // 2] == 255
    assert_page_shows_the_answer_to(page, api, caught.value)
    playground.assert_clean()


def write_seven(path: Path, mode: str, size: tuple[int, int]) -> bytes:
    """A white 7 on black, of another size and mode than the model's: the server adapts it."""
    width, height = size
    image = Image.new(mode, size)
    pixels = image.load()
    assert pixels is not None
    white = 255 if mode == "L" else (255, 255, 255)
    for x in range(width // 5, 4 * width // 5):
        for dy in range(3):
            pixels[x, height // 5 + dy] = white  # the bar
    for y in range(height // 5, 4 * height // 5):
        x = 4 * width // 5 - (y - height // 5) * (2 * width // 5) // (3 * height // 5)
        for dx in range(3):
            pixels[min(x + dx, width - 1), y] = white  # the slant
    image.save(path)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("name", "mode", "size", "content_type"),
    [("seven.png", "L", (40, 40), "image/png"), ("seven.jpg", "RGB", (64, 48), "image/jpeg")],
)
def test_an_uploaded_file_is_sent_as_it_is_and_gets_its_probabilities(
    playground: Playground,
    api: httpx.Client,
    tmp_path: Path,
    name: str,
    mode: str,
    size: tuple[int, int],
    content_type: str,
) -> None:
    page = playground.page
    data = write_seven(tmp_path / name, mode, size)
    with page.expect_request(is_predict) as caught:
        page.set_input_files("#image-file", tmp_path / name)
    page.wait_for_selector("#image-probabilities[data-state=ready]")
    assert sent_image(caught.value) == data  # the file itself, byte for byte
    expected = assert_page_shows_the_answer_to(page, api, caught.value)
    raw = api.post("/models/digits/predict", content=data, headers={"Content-Type": content_type})
    assert raw.json()["predictions"][0]["probabilities"] == expected["probabilities"]
    assert page.get_attribute("#image-probabilities", "data-source") == "file"
    assert page.text_content("#image-source") == f"{name}:"
    preview = page.locator("#upload-preview")
    assert preview.is_visible()
    assert preview.get_attribute("alt") == f"The uploaded image {name}"
    playground.assert_clean()


def test_a_file_that_is_not_an_image_shows_the_servers_error(
    playground: Playground, api: httpx.Client, tmp_path: Path
) -> None:
    page = playground.page
    (tmp_path / "notes.png").write_text("not a picture")
    with page.expect_request(is_predict) as caught:
        page.set_input_files("#image-file", tmp_path / "notes.png")
    page.wait_for_selector("#image-probabilities[data-state=error]")
    answer = api.post(
        httpx.URL(caught.value.url).path,
        content=caught.value.post_data_buffer,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    error = page.locator("#image-probabilities .error")
    assert error.text_content() == f"422: {answer.json()['error']}"
    assert page.locator("#image-label").is_hidden()
    # The 422 is the server's answer, which the browser logs; nothing else went wrong.
    assert all("422" in problem for problem in playground.problems)
    playground.problems.clear()
    playground.assert_clean()


def test_a_table_model_gets_the_map_back(playground: Playground) -> None:
    page = playground.page
    draw(page, (0.5, 0.2), (0.5, 0.8))
    page.select_option("#model-select", "blobs")
    page.wait_for_selector("#regions[data-state=ready]")
    assert page.locator("#drawing").is_hidden()
    assert page.locator("#map").is_visible()
    # Back on digits: a fresh, black canvas and no result.
    page.select_option("#model-select", "digits")
    page.wait_for_selector("#drawing", state="visible")
    assert page.evaluate(SKETCH_MAX) == 0
    assert page.get_attribute("#image-probabilities", "data-state") == "idle"
    playground.assert_clean()
