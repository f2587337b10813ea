"""The playground's form for a model of several named inputs, in a real headless Chromium.

The server serves the session's default model (``blobs``) and ``customers``, built as the
Keras guide "Structured data classification from scratch" builds its model: one
``keras.Input`` per column in a dict, ``Normalization`` on the numeric ones (one of them
three values wide), ``StringLookup`` on the string one, concatenated into a small dense
network, fitted briefly; exported with the real command. The test fills the fields,
catches the request the page sends, and checks that the page shows what Keras gives for
the same raw values and exactly what the server answers to that very body.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
from playwright.sync_api import BrowserContext, Page, Request

from tests.conftest import Server, TrainedRepository, start_server
from tests.training.exported import export_keras
from tests.ui.conftest import Playground, open_playground

pytestmark = pytest.mark.browser

TOLERANCE = 1e-5
CITIES = ["Lyon", "Paris", "Nice"]
NUMERIC = ("age", "income", "visits")


def customers_data() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """120 customers: an age, an income, visits in each of the last three months, a city."""
    rng = np.random.default_rng(11)
    n = 120
    data = {
        "age": rng.uniform(18, 80, (n, 1)).astype("float32"),
        "income": rng.uniform(1e4, 1e5, (n, 1)).astype("float32"),
        "visits": rng.poisson(3, (n, 3)).astype("float32"),
        "city": rng.choice(CITIES, (n, 1)),
    }
    y = (data["age"][:, 0] > 45).astype(int) + (data["city"][:, 0] == "Paris")
    return data, y


def customers_model() -> keras.Model:
    """The guide's pattern: a dict of named inputs, preprocessing inside, three classes."""
    keras.utils.set_random_seed(11)
    data, y = customers_data()
    inputs = {
        "age": keras.Input((1,), name="age"),
        "income": keras.Input((1,), name="income"),
        "visits": keras.Input((3,), name="visits"),
        "city": keras.Input((1,), dtype="string", name="city"),
    }
    encoded = []
    for name in NUMERIC:
        normalize = keras.layers.Normalization()
        normalize.adapt(data[name])
        encoded.append(normalize(inputs[name]))
    lookup = keras.layers.StringLookup(output_mode="one_hot")
    lookup.adapt(data["city"])
    encoded.append(lookup(inputs["city"]))
    x = keras.layers.Dense(16, activation="relu")(keras.layers.concatenate(encoded))
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    dataset = tf.data.Dataset.from_tensor_slices((data, y)).batch(16)
    model.fit(dataset, epochs=3, verbose=0, shuffle=False)
    return model


def keras_probabilities(model: keras.Model, raw: dict[str, Any]) -> list[float]:
    """What Keras gives for one customer's raw values."""
    given = {
        name: tf.constant([np.ravel(value)], dtype="float32" if name in NUMERIC else None)
        for name, value in raw.items()
    }
    return [float(p) for p in np.asarray(model(given))[0]]


@pytest.fixture(scope="module")
def named_model(
    trained: TrainedRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, keras.Model]]:
    """The real service on ``blobs`` (the default) and ``customers``, exported by the CLI."""
    workdir = tmp_path_factory.mktemp("named-ui")
    shutil.copytree(trained.repository, workdir / "models")
    model = customers_model()
    export_keras(model, workdir, "customers", "--class-names", "low,medium,high")
    running = start_server(workdir, workdir / "server.log", SERVICE_DEFAULT_MODEL="blobs")
    yield running, model
    assert running.stop() == 0, running.output()


@pytest.fixture
def playground(
    browser: BrowserContext, named_model: tuple[Server, keras.Model]
) -> Iterator[Playground]:
    with open_playground(browser, named_model[0]) as seen:
        page = seen.page
        page.wait_for_selector("#regions[data-state=ready]")  # blobs first, the default
        page.select_option("#model-select", "customers")
        page.wait_for_selector("#named-panel", state="visible")
        yield seen


def is_predict(request: Request) -> bool:
    return request.method == "POST" and request.url.endswith("/predict")


def fill(page: Page, typed: dict[str, str]) -> None:
    for name, value in typed.items():
        page.fill(f'#named-fields [data-name="{name}"]', value)


def shown(page: Page) -> tuple[list[float], list[float]]:
    """The probabilities in the table: exact (``data-probability``) and as displayed."""
    cells = page.locator("#named-probabilities [data-probability]")
    exact = [float(c) for c in cells.evaluate_all("cs => cs.map(c => c.dataset.probability)")]
    return exact, [float(text) for text in cells.all_text_contents()]


@pytest.mark.parametrize(
    ("typed", "raw"),
    [
        (
            {"age": "41", "income": "52000", "visits": "1, 2, 3", "city": "Lyon"},
            {"age": 41, "income": 52000, "visits": [1, 2, 3], "city": "Lyon"},
        ),
        (  # loose numbers, other separators, and a city the lookup never saw
            {"age": "70.5", "income": "1.2e4", "visits": "0;5 .5", "city": "Tokyo"},
            {"age": 70.5, "income": 12000, "visits": [0, 5, 0.5], "city": "Tokyo"},
        ),
    ],
)
def test_filled_fields_get_what_keras_and_the_api_give_for_those_raw_values(
    playground: Playground,
    named_model: tuple[Server, keras.Model],
    typed: dict[str, str],
    raw: dict[str, Any],
) -> None:
    server, model = named_model
    page = playground.page
    assert page.locator("#map").is_hidden()
    assert page.locator("#text-panel").is_hidden()
    assert "4 named inputs (age, city, income, visits)" in (
        page.text_content("#model-summary") or ""
    )
    fill(page, typed)
    with page.expect_request(is_predict) as caught:
        page.click("#named-classify")
    page.wait_for_selector("#named-probabilities[data-state=ready]")
    assert caught.value.post_data_json == {"instances": [raw]}  # one object naming each input
    answer = httpx.post(
        server.url + httpx.URL(caught.value.url).path, json={"instances": [raw]}
    ).json()["predictions"][0]
    exact, displayed = shown(page)
    assert exact == answer["probabilities"]
    expected = keras_probabilities(model, raw)
    np.testing.assert_allclose(exact, expected, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(displayed, expected, atol=TOLERANCE, rtol=0)
    assert page.get_attribute("#named-probabilities", "data-label") == answer["label"]
    assert page.locator("#named-error").is_hidden()
    playground.assert_clean()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("age", "", "age: expected a number, received nothing"),
        ("income", "abc", 'income: expected a number, received "abc"'),
        ("income", "1e999", 'income: expected a number, received "1e999"'),
        ("visits", "1, 2", "visits: expected 3 numbers, received 2: 1, 2"),
    ],
)
def test_a_bad_value_gets_a_message_naming_its_field_and_no_request(
    playground: Playground, name: str, value: str, message: str
) -> None:
    page = playground.page
    fill(page, {"age": "41", "income": "52000", "visits": "1, 2, 3", "city": "Lyon"})
    page.click("#named-classify")
    page.wait_for_selector("#named-probabilities[data-state=ready]")
    fill(page, {name: value})
    asked = sum(url.endswith("/predict") for url in playground.requests)
    page.click("#named-classify")
    error = page.locator("#named-error")
    error.wait_for(state="visible")
    assert error.text_content() == message
    field = page.locator(f'#named-fields [data-name="{name}"]')
    assert field.get_attribute("aria-invalid") == "true"
    # The probabilities of the values before are gone, and nothing was sent.
    assert page.get_attribute("#named-probabilities", "data-state") == "idle"
    assert page.locator("#named-label").is_hidden()
    assert sum(url.endswith("/predict") for url in playground.requests) == asked

    fill(page, {name: {"visits": "1 2 3"}.get(name, "7")})
    page.click("#named-classify")
    page.wait_for_selector("#named-probabilities[data-state=ready]")
    assert error.is_hidden()
    assert field.get_attribute("aria-invalid") is None
    playground.assert_clean()


def test_a_value_only_the_server_refuses_shows_its_422_and_a_table_model_gets_the_map_back(
    playground: Playground, named_model: tuple[Server, keras.Model]
) -> None:
    page = playground.page
    fill(page, {"age": "41", "income": "1e39", "visits": "1, 2, 3", "city": "Lyon"})
    with page.expect_request(is_predict) as caught:
        page.click("#named-classify")
    page.wait_for_selector("#named-probabilities[data-state=error]")
    answer = httpx.post(
        named_model[0].url + httpx.URL(caught.value.url).path,
        content=caught.value.post_data,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    shown_error = page.locator("#named-probabilities .error")
    assert shown_error.text_content() == f"422: {answer.json()['error']}"
    assert "income" in answer.json()["error"]
    assert page.locator("#named-label").is_hidden()

    page.select_option("#model-select", "blobs")
    page.wait_for_selector("#regions[data-state=ready]")
    assert page.locator("#named-panel").is_hidden()
    assert page.locator("#named-fields input").count() == 0
    # The 422 the page provoked is the server's answer, not a page error: only it is logged.
    assert all("422" in problem for problem in playground.problems)
    playground.problems.clear()
    playground.assert_clean()
