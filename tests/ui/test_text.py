"""The playground's text box for raw-text models, in a real headless Chromium.

The server serves the session's default model (``blobs``) and ``reviews``, a model that
takes raw strings (``TextVectorization`` into an ``Embedding`` and a softmax), exported
with the real command. The test types into the box, catches the request the page sends
and checks that the page shows exactly what the server answers to that very body.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import keras
import numpy as np
import pytest
from playwright.sync_api import BrowserContext, Request

from tests.conftest import Server, TrainedRepository, start_server
from tests.training.exported import export_keras
from tests.ui.conftest import Playground, open_playground

pytestmark = pytest.mark.browser


def reviews_model() -> keras.Model:
    keras.utils.set_random_seed(5)
    vectorize = keras.layers.TextVectorization(max_tokens=50, output_sequence_length=6)
    vectorize.adapt(np.array([["a great film"], ["an awful plot"], ["fine, not great"]]))
    inputs = keras.Input((1,), dtype="string")
    x = keras.layers.Embedding(50, 4, embeddings_initializer="random_normal")(vectorize(inputs))
    x = keras.layers.GlobalAveragePooling1D()(x)
    wide = keras.initializers.RandomNormal(0, 3)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer=wide)(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def text_server(
    trained: TrainedRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("text-ui")
    shutil.copytree(trained.repository, workdir / "models")
    export_keras(reviews_model(), workdir, "reviews", "--class-names", "bad,fine,good")
    running = start_server(workdir, workdir / "server.log", SERVICE_DEFAULT_MODEL="blobs")
    yield running
    assert running.stop() == 0, running.output()


@pytest.fixture
def playground(browser: BrowserContext, text_server: Server) -> Iterator[Playground]:
    with open_playground(browser, text_server) as seen:
        page = seen.page
        page.wait_for_selector("#regions[data-state=ready]")  # blobs first, the default
        page.select_option("#model-select", "reviews")
        page.wait_for_selector("#text-panel", state="visible")
        yield seen


def is_predict(request: Request) -> bool:
    return request.method == "POST" and request.url.endswith("/predict")


def test_typed_text_gets_the_probabilities_the_server_gives_for_that_string(
    playground: Playground, text_server: Server
) -> None:
    page = playground.page
    assert page.locator("#map").is_hidden()
    assert page.locator("#drawing").is_hidden()
    assert "raw text" in (page.text_content("#model-summary") or "")
    typed = "What a GREAT film, café!"
    page.fill("#text-input", typed)
    with page.expect_request(is_predict) as caught:
        page.click("#text-classify")
    page.wait_for_selector("#text-probabilities[data-state=ready]")
    assert caught.value.post_data_json == {"instances": [typed]}  # the string as typed
    answer = httpx.post(
        text_server.url + httpx.URL(caught.value.url).path, json={"instances": [typed]}
    ).json()["predictions"][0]
    cells = page.eval_on_selector_all(
        "#text-probabilities [data-probability]", "cells => cells.map(c => c.dataset.probability)"
    )
    assert [float(c) for c in cells] == answer["probabilities"]
    assert page.get_attribute("#text-probabilities", "data-label") == answer["label"]
    playground.assert_clean()


def test_an_empty_text_is_classified_and_a_table_model_gets_the_map_back(
    playground: Playground,
) -> None:
    page = playground.page
    page.click("#text-classify")  # an empty string: no tokens, all padding, still an answer
    page.wait_for_selector("#text-probabilities[data-state=ready]")
    page.select_option("#model-select", "blobs")
    page.wait_for_selector("#regions[data-state=ready]")
    assert page.locator("#text-panel").is_hidden()
    assert page.get_attribute("#text-probabilities", "data-state") == "idle"
    playground.assert_clean()
