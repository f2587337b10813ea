"""The playground's live monitor and the OOD marks of its map, in a real headless Chromium.

The server serves the session's default model (``blobs``, with its training references)
and ``plain``, the same version without them, as an exported model has none, with
feedback on. The tests feed it a stream with true labels, then check that every number
the monitor shows is the one ``GET /models/{name}/monitor`` holds, exactly, and that the
map hatches exactly the grid cells ``/predict`` calls out of distribution.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import BrowserContext, Page

from tests.conftest import Server, TrainedRepository, start_server
from tests.ui.conftest import Playground, open_playground

pytestmark = pytest.mark.browser

GRID = 60  # the map's cells per side, as in playground.js


@pytest.fixture(scope="module")
def monitored(
    trained: TrainedRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The real service on ``blobs`` and ``plain`` (no training references), feedback on."""
    workdir = tmp_path_factory.mktemp("monitor-ui")
    shutil.copytree(trained.repository, workdir / "models")
    shutil.copytree(workdir / "models" / "blobs", workdir / "models" / "plain")
    metadata_path = workdir / "models" / "plain" / "1" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    del metadata["monitoring"]
    metadata["name"] = "plain"
    metadata_path.write_text(json.dumps(metadata))
    running = start_server(
        workdir,
        workdir / "server.log",
        SERVICE_DEFAULT_MODEL="blobs",
        SERVICE_FEEDBACK_MAX_BYTES=str(16 * 2**20),
    )
    yield running
    assert running.stop() == 0, running.output()


@pytest.fixture
def playground(browser: BrowserContext, monitored: Server) -> Iterator[Playground]:
    """A fresh tab on ``/``, its map drawn and its monitor read once."""
    with open_playground(browser, monitored) as seen:
        seen.page.wait_for_selector("#regions[data-state=ready]")
        # ready, or empty: the map's own rows stay out of the window
        seen.page.wait_for_selector("#monitor[data-state=ready], #monitor[data-state=empty]")
        yield seen


def feed(server: Server, spread: float, rows: int, seed: int) -> None:
    """``rows`` instances around the training centres (``spread``: their standard deviation),
    predicted, then labelled with the centre each was drawn from."""
    data = httpx.get(server.url + "/models/blobs").json()["training"]["data"]
    centres = np.array(data["centers"])
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centres), rows)
    x = centres[labels] + rng.normal(0, spread, (rows, 2))
    request_id = f"stream-{seed}"
    answer = httpx.post(
        server.url + "/predict",
        json={"instances": x.tolist()},
        headers={"X-Request-ID": request_id},
    )
    assert answer.status_code == 200, answer.text
    told = httpx.post(
        server.url + "/models/blobs/feedback",
        json={"request_id": request_id, "labels": [str(k) for k in labels]},
    )
    assert told.status_code == 200, told.text


def monitor_json(server: Server, name: str = "blobs") -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/models/{name}/monitor")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def shown_numbers(page: Page) -> dict[str, list[tuple[str, str]]]:
    """Every number in the monitor: its data-key, with (exact value, text shown) per use."""
    pairs: list[list[str]] = page.eval_on_selector_all(
        "#monitor data.num", "es => es.map(e => [e.dataset.key, e.value, e.textContent])"
    )
    numbers: dict[str, list[tuple[str, str]]] = {}
    for key, value, text in pairs:
        numbers.setdefault(key, []).append((value, text))
    return numbers


def expected_value(key: str, summary: dict[str, Any], metadata: dict[str, Any]) -> Any:
    """What ``key`` names: a field of the monitor's JSON, or ``reference.`` of the metadata."""
    if key.startswith("reference."):
        source: Any = {
            "predicted_mix": metadata["monitoring"]["predicted_mix"],
            "test_accuracy": metadata["metrics"]["test_accuracy"],
        }
        key = key.removeprefix("reference.")
    else:
        source = summary
    head, _, rest = key.partition(".")
    if head == "features":
        name, _, field = rest.partition(".")
        return next(f for f in summary["features"] if f["name"] == name)[field]
    value = source[head]
    if not rest:
        return value
    return value[int(rest)] if isinstance(value, list) else value[rest]


def reads_as(text: str, value: float) -> bool:
    """The text shown is ``value`` to its 3 significant digits (a share as a percentage)."""
    number = float(text.removesuffix(" %")) / (100 if text.endswith(" %") else 1)
    return math.isclose(number, value, rel_tol=5e-3, abs_tol=1e-15)


def psi_words(value: float) -> str:
    """The page's reading of a PSI (0.1 and 0.25: the thresholds it draws)."""
    return "shift" if value > 0.25 else "some shift" if value >= 0.1 else "no shift"


def test_the_monitor_shows_exactly_the_numbers_of_its_json_after_a_shifted_stream(
    playground: Playground, monitored: Server, tmp_path: Path
) -> None:
    page = playground.page
    before = monitor_json(monitored).get("rows_seen", 0)  # none before a first answer
    # A window of 1,000: 600 rows like the training data, then 400 four times as spread.
    feed(monitored, 1.5, 600, seed=1)
    feed(monitored, 6.0, 400, seed=2)
    # No click: the page asks again by itself every 5 s while "every 5 s" is ticked.
    page.wait_for_selector(f"#monitor[data-state=ready][data-rows-seen='{before + 1000}']")
    summary = monitor_json(monitored)
    metadata = httpx.get(monitored.url + "/models/blobs").json()
    assert summary["window_rows"] == 1000
    assert summary["feedback"]["rows"] == 1000

    numbers = shown_numbers(page)
    classes = range(len(metadata["class_names"]))
    required = {
        "window_rows",
        "rows_seen",
        "reference_rows",
        "predicted_mix_psi",
        "features.x1.psi",
        "features.x2.psi",
        "features.x1.missing",
        "features.x1.reference_missing",
        "ood_rate",
        "reference_ood_rate",
        "mean_entropy",
        "reference_mean_entropy",
        "estimated_accuracy",
        "reference.test_accuracy",
        "feedback.accuracy",
        "feedback.rows",
        "feedback.log_loss",
        "feedback.ece",
        *(f"predicted_mix.{k}" for k in classes),
        *(f"reference.predicted_mix.{k}" for k in classes),
    }
    assert required <= set(numbers)
    for key, uses in numbers.items():
        expected = expected_value(key, summary, metadata)
        for value, text in uses:
            assert float(value) == expected, key  # exact: the value is String(number)
            assert reads_as(text, expected), (key, text, expected)

    # The bars: a window bar and a training bar per class; a PSI bar per measured signal,
    # each track with the two threshold lines, and the reading in words beside it.
    assert page.locator("#monitor-mix .mbar.window").count() == len(classes)
    assert page.locator("#monitor-mix .mbar.reference").count() == len(classes)
    psi_bars = page.eval_on_selector_all(
        "#monitor-psi .mbar[data-key]", "es => es.map(e => e.dataset.key)"
    )
    assert psi_bars == ["predicted_mix_psi", "features.x1.psi", "features.x2.psi"]
    assert page.locator("#monitor-psi .psi .threshold").count() == 2 * 3
    verdicts = page.locator("#monitor-psi .psi-row .verdict").all_text_contents()
    psis = [summary["predicted_mix_psi"], *(f["psi"] for f in summary["features"])]
    assert verdicts == [psi_words(value) for value in psis]
    # The spread stream: many rows far from any training data, and the page says so.
    assert summary["ood_rate"] > 3 * summary["reference_ood_rate"]
    assert summary["ood_rate"] > 0.05
    assert "far more inputs far from the training data than in training" in (
        page.text_content("#monitor-signals") or ""
    )
    assert f"the last 1000 of {summary['rows_seen']} answered rows" in (
        page.text_content("#monitor-status") or ""
    )
    asked = [url for url in playground.requests if url.endswith("/monitor")]
    assert asked
    assert all(url.endswith("/models/blobs/versions/1/monitor") for url in asked)

    screenshot = tmp_path / "monitor.png"
    page.screenshot(path=screenshot, full_page=True)
    print(f"monitor screenshot: {screenshot}")
    playground.assert_clean()


def test_refresh_asks_again_with_auto_refresh_off(
    playground: Playground, monitored: Server
) -> None:
    page = playground.page
    page.uncheck("#monitor-auto")
    feed(monitored, 1.5, 5, seed=4)  # a window with rows, whatever ran before
    page.click("#monitor-refresh")
    before = monitor_json(monitored)["rows_seen"]
    page.wait_for_selector(f"#monitor[data-state=ready][data-rows-seen='{before}']")
    feed(monitored, 1.5, 5, seed=3)
    assert page.get_attribute("#monitor", "data-rows-seen") == str(before)
    page.click("#monitor-refresh")
    page.wait_for_selector(f"#monitor[data-state=ready][data-rows-seen='{before + 5}']")
    shown = shown_numbers(page)
    assert shown["rows_seen"] == [(str(before + 5), str(before + 5))]
    playground.assert_clean()


def test_a_version_without_training_references_shows_why_it_is_not_monitored(
    playground: Playground, monitored: Server
) -> None:
    page = playground.page
    page.select_option("#model-select", "plain")
    page.wait_for_selector("#monitor[data-state=unmonitored][data-model=plain]")
    summary = monitor_json(monitored, "plain")
    assert summary["monitored"] is False
    reason = summary["reason"]
    assert not reason.endswith(".")  # the page ends the sentence
    assert page.text_content("#monitor-reason") == f"Not monitored: {reason}."
    assert page.locator("#monitor-body").is_hidden()

    page.select_option("#model-select", "blobs")
    page.wait_for_selector(
        "#monitor[data-state=ready][data-model=blobs], #monitor[data-state=empty][data-model=blobs]"
    )
    assert page.locator("#monitor-reason").is_hidden()
    playground.assert_clean()


# Whether each grid cell's centre is painted on the OOD layer (any alpha), row by row from
# the top, as the page lays the grid out.
MARKED_CELLS = """(grid) => {
  const layer = document.querySelector("#regions-ood");
  const pixels = layer.getContext("2d").getImageData(0, 0, layer.width, layer.height).data;
  const cell = layer.width / grid;
  const marked = [];
  for (let row = 0; row < grid; row++) {
    for (let col = 0; col < grid; col++) {
      const x = Math.floor((col + 0.5) * cell);
      const y = Math.floor((row + 0.5) * cell);
      marked.push(pixels[4 * (y * layer.width + x) + 3] > 0);
    }
  }
  return marked;
}"""


def grid_points(extent: list[float]) -> list[list[float]]:
    """The cell centres the page asks about, in its order and with its arithmetic."""
    x_min, x_max, y_min, y_max = extent
    dx, dy = (x_max - x_min) / GRID, (y_max - y_min) / GRID
    return [
        [x_min + (col + 0.5) * dx, y_max - (row + 0.5) * dy]
        for row in range(GRID)
        for col in range(GRID)
    ]


def test_the_map_hatches_exactly_the_cells_predict_calls_out_of_distribution(
    playground: Playground, monitored: Server
) -> None:
    page = playground.page
    extent = json.loads(page.get_attribute("#regions", "data-extent") or "")
    points = grid_points(extent)
    answer = httpx.post(
        monitored.url + "/predict", json={"instances": points, "format": "columnar"}
    ).json()
    ood: list[bool] = answer["ood"]
    marked: list[bool] = page.evaluate(MARKED_CELLS, GRID)
    assert marked == ood
    assert page.get_attribute("#regions-ood", "data-cells") == str(sum(ood))
    # The far corners of the map are far from the four blobs; the blob centres are not.
    assert all(ood[i] for i in (0, GRID - 1, GRID * (GRID - 1), GRID * GRID - 1))
    centres = httpx.get(monitored.url + "/models/blobs").json()["training"]["data"]["centers"]
    x_min, x_max, y_min, y_max = extent
    for cx, cy in centres:
        col = int((cx - x_min) / (x_max - x_min) * GRID)
        row = int((y_max - cy) / (y_max - y_min) * GRID)
        assert not marked[row * GRID + col], (cx, cy)
    assert page.text_content("#legend-ood") == "far from the training data (OOD)"
    assert page.locator("#ood-caption").is_visible()

    # A click in a far corner: the point's answer says it is out of distribution too.
    box = page.locator("#regions").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + 4, box["y"] + 4)
    page.wait_for_selector("#point-probabilities[data-state=ready]")
    assert page.get_attribute("#point-ood", "data-ood") == "true"
    assert (page.text_content("#point-ood") or "").startswith("Far from the training data")
    playground.assert_clean()


def test_the_maps_own_rows_stay_out_of_the_window(
    playground: Playground, monitored: Server
) -> None:
    # The page asks its 3,600 grid points with X-Softmax-Monitor: off: answered (and
    # counted in the metrics) but kept out of the window, feedback, log and shadow.
    page = playground.page
    before = monitor_json(monitored).get("rows_seen", 0)
    page.reload()
    page.wait_for_selector("#regions[data-state=ready]")
    assert page.get_attribute("#regions-ood", "data-cells") is not None  # drawn again
    assert monitor_json(monitored).get("rows_seen", 0) == before
    extent = json.loads(page.get_attribute("#regions", "data-extent") or "")
    asked = httpx.post(monitored.url + "/predict", json={"instances": grid_points(extent)})
    assert asked.status_code == 200
    assert monitor_json(monitored)["rows_seen"] == before + GRID * GRID  # as any request
