"""Raw-text models: the preprocessing lives in the model, clients send strings.

Each model is written as the Keras guides write one ("Text classification from
scratch": ``keras.Input((1,), dtype="string")`` into ``TextVectorization`` and the
network; a bag of bigrams in ``tf_idf``; token ids of any length into a masked LSTM; a
``StringLookup`` over a category), trained a little on a small corpus, exported by the
real command, and served. For strings with punctuation, accents and other scripts,
words never seen in training, an empty string and a long one, every protocol must
answer what Keras answers for that string alone, within 1e-5. The service runs the
string layer itself (``service/inference/text.py``, proven token for token against
Keras in ``tests/inference/test_text.py``) and LiteRT the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.http as triton

from model_training.cli import main as train_main
from service.client import Client
from tests.conftest import Server, start_server
from tests.training.exported import export_keras, native_and_v1

TOLERANCE = 1e-5

CORPUS = [
    ("what a great film, I loved every minute", 2),
    ("a wonderful, moving story with great acting", 2),
    ("brilliant! the best film of the year", 2),
    ("terrible plot and awful acting", 0),
    ("boring, far too long and badly written", 0),
    ("the worst film I have seen", 0),
    ("it was fine, nothing special", 1),
    ("an average film with a few good scenes", 1),
    ("not bad, not great either", 1),
]
TEXTS = np.array([[text] for text, _ in CORPUS])
LABELS = np.array([label for _, label in CORPUS])
#: What clients send: seen and unseen words, punctuation, other scripts, an empty string
#: (not for a model of any length: see the refusal test), a long string.
ASKED = [
    "what a great film",
    "Terrible, AWFUL acting!!!",
    "Café été naïve — «great» ¿film?",
    "東京 great 😀 film",
    "completely unseen vocabulary here",
    "tab\tseparated\nlines  and   spaces",
    " ".join(["great film awful plot"] * 100),
]


def fit(model: keras.Model, loss: str) -> keras.Model:
    model.compile("adam", loss)
    labels = (LABELS == 2).astype("float32") if loss == "binary_crossentropy" else LABELS
    model.fit(tf.constant(TEXTS), labels, epochs=3, verbose=0)
    return model


def from_scratch() -> keras.Model:
    """The guide's model (its own standardization aside): ids of a fixed length, an
    Embedding, a Conv1D, global max pooling, one sigmoid output."""
    vectorize = keras.layers.TextVectorization(max_tokens=200, output_sequence_length=12)
    vectorize.adapt(TEXTS)
    inputs = keras.Input((1,), dtype="string")
    x = keras.layers.Embedding(200, 8)(vectorize(inputs))
    x = keras.layers.Conv1D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    return fit(
        keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x)), "binary_crossentropy"
    )


def bigrams_tf_idf() -> keras.Model:
    """A bag of words and bigrams weighted by TF-IDF, a softmax over three classes."""
    vectorize = keras.layers.TextVectorization(max_tokens=300, ngrams=2, output_mode="tf_idf")
    vectorize.adapt(TEXTS)
    model = keras.Sequential(
        [
            keras.Input((1,), dtype="string"),
            vectorize,
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    return fit(model, "sparse_categorical_crossentropy")


def any_length_lstm() -> keras.Model:
    """As many ids as the text has tokens, masked, through a bidirectional LSTM."""
    vectorize = keras.layers.TextVectorization(max_tokens=200)
    vectorize.adapt(TEXTS)
    inputs = keras.Input((1,), dtype="string")
    x = keras.layers.Embedding(200, 8, mask_zero=True)(vectorize(inputs))
    x = keras.layers.Bidirectional(keras.layers.LSTM(4))(x)
    return fit(keras.Model(inputs, keras.layers.Dense(3)(x)), "sparse_categorical_crossentropy")


def category_lookup() -> keras.Model:
    """A StringLookup on a string input, one-hot into a softmax."""
    lookup = keras.layers.StringLookup(output_mode="one_hot")
    lookup.adapt(np.array([["red"], ["green"], ["blue"], ["green"]]))
    inputs = keras.Input((1,), dtype="string")
    x = keras.layers.Dense(4, activation="relu")(lookup(inputs))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


#: name: (the model, how its output reads, the strings to ask)
MODELS: dict[str, tuple[Callable[[], keras.Model], str, list[str]]] = {
    "scratch": (from_scratch, "sigmoid", [*ASKED, ""]),
    "tfidf": (bigrams_tf_idf, "probabilities", [*ASKED, ""]),
    "lstm": (any_length_lstm, "logits", ASKED),
    "colour": (category_lookup, "probabilities", ["red", "blue", "purple", "Green", ""]),
}


def keras_alone(model: keras.Model, strings: list[str], output: str) -> np.ndarray:
    """What Keras answers for each string alone, as a distribution (float64)."""
    rows = [np.asarray(model(tf.constant([[s]])), dtype=np.float64)[0] for s in strings]
    y = np.stack(rows)
    if output == "sigmoid":
        return np.concatenate([1 - y, y], axis=1)
    if output == "logits":
        e = np.exp(y - y.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True))
    return y


@pytest.fixture(scope="module")
def text_models(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, dict[str, tuple[list[str], np.ndarray]], Path]]:
    workdir = tmp_path_factory.mktemp("text")
    cases: dict[str, tuple[list[str], np.ndarray]] = {}
    for name, (build, output, strings) in MODELS.items():
        model = build()
        export_keras(model, workdir, name)
        cases[name] = (strings, keras_alone(model, strings, output))
    server = start_server(
        workdir,
        workdir / "server.log",
        SERVICE_MODEL_REPOSITORY="models",
        SERVICE_DEFAULT_MODEL="scratch",
    )
    yield server, cases, workdir / "models"
    assert server.stop() == 0, server.output()


def test_the_version_holds_the_string_layer_and_a_keras_model_taking_strings(
    text_models: tuple[Server, dict[str, tuple[list[str], np.ndarray]], Path],
) -> None:
    _, cases, repository = text_models
    for name in cases:
        version = repository / name / "1"
        metadata = json.loads((version / "metadata.json").read_text())
        assert metadata["input"]["kind"] == "text"
        assert "text.json" in metadata["files"]  # the vocabulary, covered by the hashes
        described = json.loads((version / "text.json").read_text())
        layer = "StringLookup" if name == "colour" else "TextVectorization"
        assert described["layer"] == layer == metadata["training"]["text_layer"]
    assert json.loads((repository / "lstm/1/metadata.json").read_text())["input"]["shape"] == [-1]
    saved = keras.saving.load_model(repository / "scratch/1/model.keras")
    strings, expected = cases["scratch"]
    got = np.asarray(saved(tf.constant([[s] for s in strings])), dtype=np.float64)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


def test_every_protocol_answers_keras_for_raw_strings(
    text_models: tuple[Server, dict[str, tuple[list[str], np.ndarray]], Path],
) -> None:
    server, cases, _ = text_models
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for name, (strings, expected) in cases.items():
            answers = native_and_v1(client, name, strings)
            named = [{"text": s} for s in strings]
            answers["v1 named"] = client.post(
                f"/v1/models/{name}:predict", json={"instances": named}
            ).json()["predictions"]
            answers["v1 columnar"] = client.post(
                f"/v1/models/{name}:predict", json={"inputs": {"text": strings}}
            ).json()["outputs"]
            tensor = {
                "name": "input",
                "datatype": "BYTES",
                "shape": [len(strings)],
                "data": strings,
            }
            v2 = client.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]}).json()
            (out,) = [o for o in v2["outputs"] if o["name"] == "probabilities"]
            answers["v2 json"] = np.reshape(out["data"], expected.shape)
            for protocol, got in answers.items():
                np.testing.assert_allclose(
                    got, expected, atol=TOLERANCE, rtol=0, err_msg=f"{name} {protocol}"
                )


def test_the_typed_client_sends_strings(
    text_models: tuple[Server, dict[str, tuple[list[str], np.ndarray]], Path],
) -> None:
    server, cases, _ = text_models
    strings, expected = cases["tfidf"]
    with Client(server.url) as client:
        answer = client.predict(strings, model="tfidf")
    got = [p.probabilities for p in answer.predictions]
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


def test_tritonclient_sends_strings_as_binary_bytes(
    text_models: tuple[Server, dict[str, tuple[list[str], np.ndarray]], Path],
) -> None:
    server, cases, _ = text_models
    strings, expected = cases["tfidf"]
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        metadata = client.get_model_metadata("tfidf")
        assert metadata["inputs"] == [{"name": "input", "datatype": "BYTES", "shape": [-1]}]
        tensor = triton.InferInput("input", [len(strings)], "BYTES")
        tensor.set_data_from_numpy(np.array([s.encode() for s in strings], dtype=np.object_))
        got = client.infer("tfidf", [tensor]).as_numpy("probabilities")
    finally:
        client.close()
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/models/lstm/predict", {"instances": ["great", ""]}, 422, "at least one token"),
        ("/models/scratch/predict", {"instances": [[1, 2, 3]]}, 422, "takes raw text"),
        ("/models/scratch/predict", {"instances": ["a", [1]]}, 422, "instances[1]"),
        (
            "/v2/models/scratch/infer",
            {
                "inputs": [
                    {"name": "input", "datatype": "INT64", "shape": [1, 12], "data": [1] * 12}
                ]
            },
            400,
            "datatype BYTES",
        ),
        ("/v1/models/scratch:predict", {"instances": [{"a": "x", "b": "y"}]}, 400, "one input"),
    ],
)
def test_what_a_text_model_cannot_take_gets_a_clear_error(
    text_models: tuple[Server, dict[str, tuple[list[str], np.ndarray]], Path],
    path: str,
    body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    server, _, _ = text_models
    answer = httpx.post(server.url + path, json=body, timeout=30)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    fine = httpx.post(f"{server.url}/models/scratch/predict", json={"instances": ["great"]})
    assert fine.status_code == 200


def test_a_string_input_of_another_shape_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=4)
    vectorize.adapt(TEXTS)
    inputs = keras.Input((2,), dtype="string")
    x = keras.layers.Flatten()(keras.layers.Embedding(20, 2)(vectorize(inputs)))
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(tmp_path / "m.keras")
    argv = ["export", str(tmp_path / "m.keras"), "--name", "m"]
    assert train_main([*argv, "--model-repository", str(tmp_path / "repo")]) == 1
    err = capsys.readouterr().err
    assert "expected a string input of shape (1,)" in err
    assert err.count("\n") == 1
