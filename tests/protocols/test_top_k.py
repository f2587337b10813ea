"""``"top_k": k`` on the native ``/predict``, on a model of 1,000 classes exported with the
real command: each instance's k most probable classes are the head of its whole answer on
the same inputs (the same classes and probabilities, most probable first, equal
probabilities by class index), in rows and in columns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import keras
import numpy as np
import pytest
from starlette.testclient import TestClient

from service.settings import Settings
from tests.conftest import in_process
from tests.protocols.test_native import assert_error
from tests.training.exported import export_keras

CLASSES, FEATURES = 1000, 16
NAMES = [f"class-{j}" for j in range(CLASSES)]
#: Classes 700..999 have the weights of 0..299: their probabilities are exactly equal.
TWINS = 300
X = np.random.default_rng(4).normal(size=(64, FEATURES)).round(3).tolist()


def thousand_classes() -> keras.Model:
    """16 features -> 64 tanh -> 1,000 softmax classes, 300 of them twins of others."""
    keras.utils.set_random_seed(8)
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(64, activation="tanh")(inputs)
    last = keras.layers.Dense(CLASSES, activation="softmax")
    model = keras.Model(inputs, last(hidden))
    kernel, bias = last.get_weights()
    kernel *= 4.0  # spread the distribution: a few classes stand out
    kernel[:, CLASSES - TWINS :], bias[CLASSES - TWINS :] = kernel[:, :TWINS], bias[:TWINS]
    last.set_weights([kernel, bias])
    return model


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    workdir = tmp_path_factory.mktemp("thousand")
    export_keras(thousand_classes(), workdir, "thousand", "--class-names", ",".join(NAMES))
    with in_process(Settings(model_repository=workdir / "models")) as c:
        yield c


def predict(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = client.post("/predict", json={"instances": X, **fields})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.fixture(scope="module")
def whole(client: TestClient) -> dict[str, Any]:
    """The whole answer for X, the reference (columnar)."""
    answer = predict(client, format="columnar")
    assert len(answer["probabilities"][0]) == CLASSES
    return answer


def head(probabilities: list[float], k: int) -> list[int]:
    """The k most probable classes, most probable first; of equal ones, the lower index."""
    return sorted(range(len(probabilities)), key=lambda j: (-probabilities[j], j))[:k]


def test_the_model_has_classes_of_equal_probability(whole: dict[str, Any]) -> None:
    twins = np.array(whole["probabilities"])
    np.testing.assert_array_equal(twins[:, CLASSES - TWINS :], twins[:, :TWINS])
    tops = [head(list(row), 5) for row in twins]
    # in some rows, a pair of twins is among the 5 (the lower index first), or cut in two
    assert any(
        best.index(j) + 1 == best.index(j + CLASSES - TWINS)
        for best in tops
        for j in best
        if j + CLASSES - TWINS in best
    )
    assert any(best[-1] < TWINS for best in tops)


@pytest.mark.parametrize("k", [1, 5, 16, 17, 100, CLASSES])
def test_columnar_top_k_is_the_head_of_the_whole_answer(
    client: TestClient, whole: dict[str, Any], k: int
) -> None:
    answer = predict(client, format="columnar", top_k=k)
    assert "probabilities" not in answer
    top = answer["top_k"]
    assert list(top) == ["indices", "labels", "probabilities"]
    for i, probabilities in enumerate(whole["probabilities"]):
        best = head(probabilities, k)
        assert top["indices"][i] == best
        assert top["probabilities"][i] == [probabilities[j] for j in best]
        assert top["labels"][i] == [NAMES[j] for j in best]
    for field in ("argmax", "labels", "entropy", "ood", "ood_distance", "model", "version"):
        assert answer[field] == whole[field], field


@pytest.mark.parametrize("k", [3, 40])
def test_row_top_k_is_the_head_of_the_whole_answer(client: TestClient, k: int) -> None:
    rows = predict(client)["predictions"]
    predictions = predict(client, top_k=k)["predictions"]
    assert len(predictions) == len(rows) == len(X)
    for prediction, row in zip(predictions, rows, strict=True):
        probabilities = row.pop("probabilities")
        best = head(probabilities, k)
        top = {
            "indices": best,
            "labels": [NAMES[j] for j in best],
            "probabilities": [probabilities[j] for j in best],
        }
        assert prediction == {"top_k": top, **row}
        assert list(prediction) == ["top_k", *row]
        assert prediction["label"] == NAMES[best[0]]


def test_v2_classification_ranks_the_classes_alike(client: TestClient) -> None:
    body = {
        "inputs": [{"name": "input", "shape": [len(X), FEATURES], "datatype": "FP64", "data": X}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 5}}],
    }
    response = client.post("/v2/models/thousand/infer", json=body)
    assert response.status_code == 200, response.text
    strings = response.json()["outputs"][0]["data"]
    top = predict(client, format="columnar", top_k=5)["top_k"]
    expected = [
        f"{p:f}:{j}:{NAMES[j]}"
        for indices, probabilities in zip(top["indices"], top["probabilities"], strict=True)
        for j, p in zip(indices, probabilities, strict=True)
    ]
    assert strings == expected


@pytest.mark.parametrize(
    ("k", "fragment"),
    [
        (0, "invalid top_k: input should be greater than or equal to 1; received 0"),
        (-3, "invalid top_k: input should be greater than or equal to 1; received -3"),
        (
            CLASSES + 1,
            "expected top_k between 1 and 1000 (the number of classes of model 'thousand' "
            "version 1), received 1001",
        ),
        (2.0, "invalid top_k: input should be a valid integer; received 2.0"),
        (True, "invalid top_k: input should be a valid integer; received true"),
        ("5", 'invalid top_k: input should be a valid integer; received "5"'),
    ],
)
def test_k_out_of_range_or_not_an_integer_is_422(client: TestClient, k: Any, fragment: str) -> None:
    response = client.post("/predict", json={"instances": X[:1], "top_k": k})
    assert_error(response, 422, fragment)


def test_openapi_documents_top_k(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["PredictRequest"]["properties"]["top_k"]["anyOf"][0]["minimum"] == 1
    assert {"TopPredictResponse", "TopColumnarPredictResponse"} <= set(schemas)
