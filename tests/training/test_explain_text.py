"""Text, token ids and sequences explained by leaving each token (step) out, checked
against Keras on the same models.

The models are written as the Keras guides write them (a ``TextVectorization`` into an
``Embedding``, ``GlobalAveragePooling1D`` and a softmax, trained a few steps on a tiny
corpus; text of any length into a masked LSTM; token ids into a masked ``Embedding``;
float steps into a GRU), exported by the real command and served in process. The
reference is Keras's ``model.predict`` on the variants built here, independently: the
text with each token removed (the tokens written out by hand), the ids with each one
set to 0, the steps with each one set to zeros. For models that mask the padding id,
setting an id to 0 is removing it: that is checked too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient

from service.settings import Settings
from tests.conftest import in_process
from tests.protocols.test_native import assert_error
from tests.training.exported import export_keras
from tests.training.test_export_sequences import float_gru, token_lstm
from tests.training.test_export_text import LABELS, TEXTS, any_length_lstm, category_lookup

TOLERANCE = 1e-5
LENGTH = 10  # the fixed-length token ids model's

#: What is asked, and the tokens Keras's default standardize and split make of it.
ASKED = {
    "What a GREAT film, I loved it!": ["what", "a", "great", "film", "i", "loved", "it"],
    "terrible plot and awful acting": ["terrible", "plot", "and", "awful", "acting"],
    "not bad, not great either": ["not", "bad", "not", "great", "either"],
    "completely unseen words": ["completely", "unseen", "words"],
}


def guide() -> keras.Model:
    """The Keras text classification guide's model: ids of a fixed length, an Embedding,
    global average pooling, a softmax over three classes."""
    vectorize = keras.layers.TextVectorization(max_tokens=200, output_sequence_length=12)
    vectorize.adapt(TEXTS)
    inputs = keras.Input((1,), dtype="string")
    x = keras.layers.Embedding(200, 8)(vectorize(inputs))
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    model.fit(tf.constant(TEXTS), LABELS, epochs=30, verbose=0)  # words that matter
    return model


def pooled_ids() -> keras.Model:
    """Token ids of a fixed length, 0 the padding a masking Embedding skips, pooled."""
    inputs = keras.Input((LENGTH,), dtype="int64")
    x = keras.layers.Embedding(50, 8, mask_zero=True)(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


#: The in-process client, the Keras models by name, the model repository.
Served = tuple[TestClient, dict[str, Any], Path]


def distribution(y: Any, logits: bool) -> np.ndarray:
    out = np.asarray(y, dtype=np.float64)
    if logits:
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    return out


#: name: (the model, whether its output is logits)
BUILDS = {
    "guide": (guide, False),
    "lstm": (any_length_lstm, True),
    "colour": (category_lookup, False),
    "ids": (pooled_ids, False),
    "tokens": (token_lstm, False),
    "steps": (float_gru, True),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Every model exported by the real command and served in process."""
    keras.utils.set_random_seed(0)
    workdir = tmp_path_factory.mktemp("explain_text")
    models = {}
    for name, (build, _) in BUILDS.items():
        models[name] = build()
        export_keras(models[name], workdir, name)
        meta = json.loads((workdir / "models" / name / "1" / "metadata.json").read_text())
        assert meta.get("calibration") is None  # the Keras model's own probabilities
    settings = Settings(model_repository=workdir / "models", default_model="guide", max_steps=64)
    with in_process(settings) as http:
        yield http, models, workdir / "models"


def explained(http: TestClient, name: str, instances: list[Any], **extra: Any) -> dict[str, Any]:
    response = http.post(f"/models/{name}/explain", json={"instances": instances, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("name", ["guide", "lstm"])
def test_each_tokens_attribution_is_keras_on_the_text_without_it(served: Served, name: str) -> None:
    http, models, _ = served
    strings = list(ASKED)
    body = explained(http, name, strings, classes=[0, 1, 2])
    assert body["method"] == "occlusion"
    assert body["baseline"]["kind"] == "removed"
    assert body["settings"]["occluded"] == "leave one token out"
    assert body["settings"]["max_tokens"] == 512
    assert body["settings"]["model_rows_per_instance"] == 8  # the longest: 7 tokens + 1
    v1 = http.post(f"/v1/models/{name}:explain", json={"instances": strings, "classes": [0, 1, 2]})
    assert v1.json() == body
    logits = BUILDS[name][1]
    largest = 0.0
    for text, answer in zip(strings, body["explanations"], strict=True):
        words = ASKED[text]
        assert answer["tokens"] == words
        assert answer["model_rows"] == len(words) + 1
        variants = [text] + [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
        p = distribution(
            models[name].predict(tf.constant([[v] for v in variants]), verbose=0), logits
        )
        np.testing.assert_allclose(answer["probabilities"], p[0], atol=TOLERANCE, rtol=0)
        for explained_class in answer["classes"]:
            k = explained_class["index"]
            np.testing.assert_allclose(
                explained_class["attributions"], p[0, k] - p[1:, k], atol=TOLERANCE, rtol=0
            )
            largest = max(largest, float(np.abs(p[0, k] - p[1:, k]).max()))
    print(f"{name}: largest |attribution| {largest:.4f}")
    assert largest > 100 * TOLERANCE  # the agreement is not of zeros


def test_the_predicted_class_is_explained_by_default_and_as_predict_answers(
    served: Served,
) -> None:
    http, _, _ = served
    strings = list(ASKED)
    body = explained(http, "guide", [{"text": s} for s in strings])
    predicted = http.post("/models/guide/predict", json={"instances": strings}).json()
    for answer, prediction in zip(body["explanations"], predicted["predictions"], strict=True):
        np.testing.assert_allclose(answer["probabilities"], prediction["probabilities"], atol=1e-9)
        [only] = answer["classes"]
        assert only["index"] == answer["argmax"]


@pytest.mark.parametrize("name", ["ids", "tokens"])
def test_each_token_ids_attribution_is_keras_with_it_masked_and_without_it(
    served: Served, name: str
) -> None:
    http, models, _ = served
    rng = np.random.default_rng(1)
    vocabulary = 50 if name == "ids" else 200
    rows = [rng.integers(1, vocabulary, size=LENGTH) for _ in range(2)]
    rows[0][-3:] = 0  # trailing padding: not scored, attributed 0
    if name == "tokens":
        rows[1] = rows[1][:4]  # any length
    body = explained(http, name, [r.tolist() for r in rows], classes=[0, 2])
    assert body["baseline"] == {
        "kind": "padding",
        "description": body["baseline"]["description"],
        "value": 0.0,
    }
    assert body["settings"]["occluded"] == "leave one token out"
    model = models[name]
    for row, answer in zip(rows, body["explanations"], strict=True):
        assert answer["tokens"] == row.tolist()
        kept = np.flatnonzero(row)
        assert answer["model_rows"] == len(kept) + 1
        masked = np.repeat(row[None], len(row), axis=0)
        masked[np.arange(len(row)), np.arange(len(row))] = 0
        p = model.predict(np.concatenate([row[None], masked]), verbose=0).astype(np.float64)
        np.testing.assert_allclose(answer["probabilities"], p[0], atol=TOLERANCE, rtol=0)
        for explained_class in answer["classes"]:
            k = explained_class["index"]
            values = np.array(explained_class["attributions"])
            np.testing.assert_allclose(values, p[0, k] - p[1:, k], atol=TOLERANCE, rtol=0)
            assert np.all(values[row == 0] == 0.0)
            for i in kept:  # the mask skips a 0: hiding a token is removing it
                without = model.predict(np.delete(row, i)[None], verbose=0)[0, k]
                assert values[i] == pytest.approx(p[0, k] - without, abs=TOLERANCE)


def test_each_steps_attribution_is_keras_with_it_set_to_zeros(
    served: Served,
) -> None:
    http, models, _ = served
    x = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
    body = explained(http, "steps", [x.tolist()])
    assert body["baseline"]["kind"] == "zeros"
    assert body["settings"]["occluded"] == "leave one step out"
    [answer] = body["explanations"]
    assert "tokens" not in answer
    variants = np.repeat(x[None], 6, axis=0)
    for i in range(5):
        variants[1 + i, i] = 0.0
    p = distribution(models["steps"].predict(variants, verbose=0), logits=True)
    [explained_class] = answer["classes"]
    k = explained_class["index"]
    np.testing.assert_allclose(answer["probabilities"], p[0], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(
        explained_class["attributions"], p[0, k] - p[1:, k], atol=TOLERANCE, rtol=0
    )


@pytest.mark.parametrize(
    ("name", "instances", "fragment"),
    [
        ("lstm", ["great"], "at least 2 tokens to explain"),
        ("colour", ["red"], "a StringLookup"),
        ("guide", [[1, 2, 3]], "takes raw text"),
        ("ids", ["a string"], "received strings"),
        ("tokens", [[1] * 65], "SERVICE_MAX_STEPS"),
    ],
)
def test_what_cannot_be_explained_gets_a_clear_error(
    served: Served, name: str, instances: list[Any], fragment: str
) -> None:
    http, _, _ = served
    response = http.post(f"/models/{name}/explain", json={"instances": instances})
    assert response.status_code in (413, 422), response.text
    assert_error(response, response.status_code, fragment)


def test_more_tokens_than_the_limit_are_refused(
    served: Served,
) -> None:
    _, _, repository = served
    settings = Settings(model_repository=repository, default_model="guide", explain_max_tokens=5)
    with in_process(settings) as limited:
        five = limited.post("/models/guide/explain", json={"instances": ["great " * 5]})
        six = limited.post("/models/guide/explain", json={"instances": ["ok", "great " * 6]})
        ids = limited.post("/models/ids/explain", json={"instances": [[1] * LENGTH]})
    assert five.status_code == 200, five.text
    assert_error(six, 422, "at most 5 tokens per instance to explain (SERVICE_EXPLAIN_MAX_TOKENS)")
    assert "received 6 in instances[1]" in six.json()["error"]
    assert_error(ids, 422, "at most 5 token ids per instance")
