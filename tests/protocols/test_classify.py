"""TF Serving's Classify API (``:classify``), requests written as in its documentation.

Every answer is checked against ``/v1 :predict`` and the native ``/predict`` on the same
inputs: the same probabilities to the last bit, every class, in ``class_names`` order.
The default table model answers in process; an image, a raw-text and a several-input
model are exported with the real command into a repository of their own.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from service.settings import Settings
from tests.conftest import Server, in_process
from tests.operations.test_observability import log_lines, samples, value
from tests.protocols.test_images import build, png
from tests.protocols.test_native import assert_error
from tests.test_docs import _named_model, _text_model
from tests.training.exported import export_keras

LABELS = ["0", "1", "2", "3"]
#: TF Serving's documented request: one object of named features per example.
EXAMPLES = [{"x1": 15.0, "x2": 0.0}, {"x1": 29.5, "x2": 14.2}, {"x1": 0.3, "x2": 15.1}]


def predicted(client: httpx.Client, path: str, instances: list[Any]) -> list[list[float]]:
    """The same instances through ``/v1 :predict`` (``path``: ``name`` or
    ``name/versions/N``), checked against the native ``/predict``: the reference."""
    v1 = client.post(f"/v1/models/{path}:predict", json={"instances": instances})
    assert v1.status_code == 200, v1.text
    native = client.post(f"/models/{path}/predict", json={"instances": instances})
    assert native.status_code == 200, native.text
    probabilities: list[list[float]] = v1.json()["predictions"]
    assert [p["probabilities"] for p in native.json()["predictions"]] == probabilities
    return probabilities


def classified(client: httpx.Client, path: str, body: dict[str, Any]) -> list[list[list[Any]]]:
    """The ``result`` of ``:classify``, checked to be TF Serving's documented shape: per
    example, a list of ``[label, score]`` pairs."""
    response = client.post(f"/v1/models/{path}:classify", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert list(answer) == ["result"]
    result: list[list[list[Any]]] = answer["result"]
    assert len(result) == len(body["examples"])
    for pairs in result:
        for pair in pairs:
            assert len(pair) == 2
            assert isinstance(pair[0], str)
            assert isinstance(pair[1], float)
    return result


def as_pairs(labels: list[str], probabilities: list[list[float]]) -> list[list[list[Any]]]:
    return [[[label, p] for label, p in zip(labels, row, strict=True)] for row in probabilities]


# --- a table: the default model -----------------------------------------------------------


def test_documented_examples_answer_every_class_with_the_probabilities_of_predict(
    client: httpx.Client,
) -> None:
    result = classified(client, "blobs", {"examples": EXAMPLES})
    rows = [[example["x1"], example["x2"]] for example in EXAMPLES]
    assert result == as_pairs(LABELS, predicted(client, "blobs", rows))
    for pairs, best in zip(result, [0, 3, 2], strict=True):  # near blobs 0, 3 and 2
        assert max(pairs, key=lambda pair: pair[1])[0] == LABELS[best]
        assert sum(score for _, score in pairs) == pytest.approx(1.0, abs=1e-12)


def test_versioned_path_and_the_default_signature_name(client: httpx.Client) -> None:
    body = {"signature_name": "serving_default", "examples": EXAMPLES[:1]}
    result = classified(client, "blobs/versions/1", body)
    assert result == as_pairs(LABELS, predicted(client, "blobs/versions/1", [[15.0, 0.0]]))


def test_context_is_merged_into_every_example_and_an_examples_own_value_wins(
    client: httpx.Client,
) -> None:
    # TF Serving parses the context, then the example, into one tf.Example: where both
    # name a feature, the example's value is the one the model sees.
    body = {"context": {"x2": 0.0}, "examples": [{"x1": 15.0}, {"x1": 29.5, "x2": 14.2}]}
    result = classified(client, "blobs", body)
    assert result == as_pairs(LABELS, predicted(client, "blobs", [[15.0, 0.0], [29.5, 14.2]]))


def test_an_example_may_name_the_models_one_input(client: httpx.Client) -> None:
    body = {"examples": [{"input": [15.0, 0.0]}, {"dense_input": [29.5, 14.2]}]}
    result = classified(client, "blobs", body)
    assert result == as_pairs(LABELS, predicted(client, "blobs", [[15.0, 0.0], [29.5, 14.2]]))


BAD: list[tuple[str, Any, str]] = [
    ("no examples", {"context": {"x1": 1.0}}, "expected the field 'examples'"),
    ("empty examples", {"examples": []}, "at least 1 item"),
    ("examples not a list", {"examples": {"x1": 1.0}}, "invalid examples"),
    (
        "an example missing a feature",
        {"examples": [{"x1": 15.0}]},
        "received no 'x2' in examples[0]",
    ),
    (
        "an unknown feature",
        {"examples": [{"x1": 15.0, "x2": 0.0, "x3": 1.0}]},
        "unknown feature 'x3' in examples[0]",
    ),
    (
        "a string for a number",
        {"examples": [EXAMPLES[0], {"x1": "15", "x2": 0.0}]},
        "expected a number or null for numeric feature 'x1', received '15' in examples[1]",
    ),
    ("a boolean", {"examples": [{"x1": True, "x2": 0.0}]}, "invalid examples[0].x1"),
    ("NaN", b'{"examples": [{"x1": NaN, "x2": 0}]}', "finite number"),
    (
        "a list for a feature",
        {"examples": [{"x1": [15.0], "x2": [0.0]}]},
        "expected one value (a number, a string or null) for each feature of the table, "
        "received a list for 'x1' in examples[0]",
    ),
    ("an empty example", {"examples": [{}]}, "received an empty object in examples[0]"),
    (
        "the input of the wrong width",
        {"examples": [{"input": [15.0, 0.0, 1.0]}]},
        "expected 2 features per instance, received 3 in examples[0]",
    ),
    (
        "examples of two forms",
        {"examples": [EXAMPLES[0], {"input": [15.0, 0.0]}]},
        "expected examples to be all objects or all arrays, received a mix",
    ),
    (
        "another signature",
        {"signature_name": "classify_objects", "examples": EXAMPLES},
        "expected signature_name 'serving_default' (the only signature), received "
        "'classify_objects'",
    ),
    ("predict's field", {"examples": EXAMPLES, "instances": [[15.0, 0.0]]}, "'instances'"),
    ("malformed", b'{"examples": [{"x1": 1', "invalid JSON"),
]


@pytest.mark.parametrize(("case", "body", "fragment"), BAD, ids=[c[0] for c in BAD])
def test_bad_requests_get_400_saying_what_was_expected(
    client: httpx.Client, case: str, body: Any, fragment: str
) -> None:
    path = "/v1/models/blobs:classify"
    sent = (
        client.post(path, content=body) if isinstance(body, bytes) else client.post(path, json=body)
    )
    assert_error(sent, 400, fragment)


def test_unknown_model_or_version_is_404(client: httpx.Client) -> None:
    body = {"examples": EXAMPLES}
    assert_error(client.post("/v1/models/half:classify", json=body), 404, "'half'")
    assert_error(client.post("/v1/models/blobs/versions/9:classify", json=body), 404, "'9'")


def test_openapi_documents_classify(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/v1/models/{name}:classify", "/v1/models/{name}/versions/{version}:classify"):
        operation = spec["paths"][path]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/TFServingClassifyRequest"}
        assert set(operation["responses"]) == {"200", "400", "404", "413", "503"}
    assert spec["components"]["schemas"]["TFServingClassifyRequest"]["examples"]


def test_classify_is_counted_and_logged_as_predict_is(server: Server) -> None:
    before = samples(server.url)
    response = httpx.post(
        server.url + "/v1/models/blobs:classify",
        json={"examples": EXAMPLES[:2]},
        headers={"X-Request-ID": "classify-observed"},
    )
    assert response.status_code == 200, response.text
    after = samples(server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    template = "/v1/models/{name}:classify"
    served = {"endpoint": template, "model": "blobs", "version": "1", "status": "200"}
    assert delta("softmax_requests_total", **served) == 1
    assert delta("softmax_request_duration_seconds_count", endpoint=template) == 1
    assert delta("softmax_predicted_class_total", model="blobs", class_name="0") == 1
    assert delta("softmax_predicted_class_total", model="blobs", class_name="3") == 1
    assert delta("softmax_request_rows_sum", model="blobs") == 2
    _, mine = log_lines(server, "classify-observed")
    assert len(mine) == 1
    record = mine[0]
    assert (record["path"], record["endpoint"], record["status"]) == (
        "/v1/models/blobs:classify",
        template,
        200,
    )
    assert (record["model"], record["version"], record["rows"]) == ("blobs", "1", 2)


# --- an image, raw text and several named inputs ----------------------------------------


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """``gray`` (8x8 gray images), ``words`` (raw text, a sigmoid head) and ``people``
    (age, income and city, each an input of its own), exported with the real command."""
    workdir = tmp_path_factory.mktemp("classify")
    export_keras(build("gray"), workdir, "gray", "--class-names", "dark,mid,light")
    export_keras(_text_model(), workdir, "words", "--class-names", "bad,good")
    export_keras(_named_model(), workdir, "people", "--class-names", "a,b,c")
    with in_process(Settings(model_repository=workdir / "models", default_model="gray")) as c:
        yield c


def test_an_image_as_a_b64_file_or_as_pixels(kinds: TestClient) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, size=(2, 8, 8, 1), dtype=np.uint8)
    files = [{"b64": base64.b64encode(png(image)).decode()} for image in pixels]
    expected = as_pairs(["dark", "mid", "light"], predicted(kinds, "gray", files))
    body = {"examples": [{"image": file} for file in files]}
    assert classified(kinds, "gray", body) == expected
    nested = {"examples": [{"pixels": image.tolist()} for image in pixels]}
    assert classified(kinds, "gray", nested) == expected


def test_raw_text_with_a_context(kinds: TestClient) -> None:
    texts = ["what a great film", "an awful plot", "fine, not great"]
    expected = as_pairs(["bad", "good"], predicted(kinds, "words", texts))
    body = {"examples": [{"text": text} for text in texts]}
    assert classified(kinds, "words", body) == expected
    with_context = {
        "context": {"text": "what a great film"},
        "examples": [{}, *body["examples"][1:]],
    }
    assert classified(kinds, "words", with_context) == expected


def test_several_named_inputs_with_a_shared_context(kinds: TestClient) -> None:
    people = [
        {"age": 30, "income": 30000, "city": "Paris"},
        {"age": 61, "income": 30000, "city": "Nice"},
    ]
    expected = as_pairs(["a", "b", "c"], predicted(kinds, "people", people))
    context = {"income": 30000, "city": "Paris"}
    body = {"context": context, "examples": [{"age": 30}, {"age": 61, "city": "Nice"}]}
    assert classified(kinds, "people", body) == expected


KIND_BAD: list[tuple[str, str, dict[str, Any], str]] = [
    ("image: not an image file", "gray", {"examples": [{"image": {"b64": "aGVsbG8="}}]}, "PNG"),
    ("image: a string", "gray", {"examples": [{"image": "a picture"}]}, "examples[0]"),
    (
        "image: two inputs",
        "gray",
        {"examples": [{"image": {"b64": "aGVsbG8="}, "caption": "seaside"}]},
        "expected examples[0] to name the model's one input, received 2 names",
    ),
    ("text: a number", "words", {"examples": [{"text": 3.0}]}, "examples[0]"),
    ("named: a missing input", "people", {"examples": [{"age": 30, "income": 1.0}]}, "'city'"),
]


@pytest.mark.parametrize(
    ("case", "name", "body", "fragment"), KIND_BAD, ids=[c[0] for c in KIND_BAD]
)
def test_bad_examples_of_each_kind_get_400(
    kinds: TestClient, case: str, name: str, body: dict[str, Any], fragment: str
) -> None:
    assert_error(kinds.post(f"/v1/models/{name}:classify", json=body), 400, fragment)
