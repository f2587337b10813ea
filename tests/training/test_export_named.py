"""Models of several named inputs, built as the Keras guides build them, exported with the
real command and asked through every protocol of the running service.

"Structured data classification from scratch": one ``keras.Input`` per column in a dict,
``Normalization`` on the numeric ones, ``StringLookup`` on the string ones, concatenated
into a small dense network; and a list of inputs of different shapes (an image and a
table row). The service answers what Keras answers for the same raw values, within 1e-5.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.http as triton

from model_training.cli import main as train_main
from tests.conftest import Server, start_server
from tests.training.exported import export_keras

TOLERANCE = 1e-5
CITIES = ["Lyon", "Paris", "Nice", "Lille"]
PLANS = ["basic", "premium"]


def people_model() -> keras.Model:
    """The guide's pattern: a dict of named inputs, three classes."""
    rng = np.random.default_rng(0)
    n = 120
    age = rng.uniform(18, 80, (n, 1)).astype("float32")
    income = rng.uniform(1e4, 1e5, (n, 1)).astype("float32")
    city = rng.choice(CITIES, (n, 1))
    plan = rng.choice(PLANS, (n, 1))
    y = (age[:, 0] > 45).astype(int) + (city[:, 0] == "Paris")
    inputs = {
        "age": keras.Input((1,), name="age"),
        "income": keras.Input((1,), name="income"),
        "city": keras.Input((1,), dtype="string", name="city"),
        "plan": keras.Input((1,), dtype="string", name="plan"),
    }
    normalize_age, normalize_income = keras.layers.Normalization(), keras.layers.Normalization()
    normalize_age.adapt(age)
    normalize_income.adapt(income)
    city_lookup = keras.layers.StringLookup(output_mode="one_hot")
    city_lookup.adapt(city)
    plan_lookup = keras.layers.StringLookup()  # indices, into an embedding
    plan_lookup.adapt(plan)
    embedded = keras.layers.Flatten()(
        keras.layers.Embedding(plan_lookup.vocabulary_size(), 2)(plan_lookup(inputs["plan"]))
    )
    x = keras.layers.concatenate(
        [
            normalize_age(inputs["age"]),
            normalize_income(inputs["income"]),
            city_lookup(inputs["city"]),
            embedded,
        ]
    )
    x = keras.layers.Dense(16, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    data = {"age": age, "income": income, "city": city, "plan": plan}
    model.fit(
        tf.data.Dataset.from_tensor_slices((data, y)).batch(16), epochs=3, verbose=0, shuffle=False
    )
    return model


def listed_model() -> keras.Model:
    """A list of inputs of different shapes: an image (rescaled inside) and a table row."""
    keras.utils.set_random_seed(1)
    image, row = keras.Input((8, 8, 1), name="image"), keras.Input((3,), name="row")
    pixels = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(image))
    x = keras.layers.concatenate([pixels, keras.layers.Dense(4, activation="relu")(row)])
    return keras.Model([image, row], keras.layers.Dense(1, activation="sigmoid")(x))


PEOPLE = [
    {"age": 41, "income": 52000, "city": "Lyon", "plan": "basic"},
    {"age": 70.5, "income": 12000, "city": "Tokyo", "plan": "premium"},  # a city never seen
    {"age": 19, "income": 99000.25, "city": "Paris", "plan": "gold"},  # a plan never seen
]
RNG = np.random.default_rng(7)
IMAGES = RNG.uniform(0, 255, (3, 8, 8, 1)).round(2)
ROWS = RNG.normal(size=(3, 3)).round(3)
LISTED = [{"image": i.tolist(), "row": r.tolist()} for i, r in zip(IMAGES, ROWS, strict=True)]


def keras_people(model: keras.Model) -> np.ndarray:
    data = {
        name: tf.constant(
            [[p[name]] for p in PEOPLE], dtype=None if name in ("city", "plan") else "float32"
        )
        for name in PEOPLE[0]
    }
    return np.asarray(model(data), dtype=np.float64)


def keras_listed(model: keras.Model) -> np.ndarray:
    p = np.asarray(model([IMAGES.astype("float32"), ROWS.astype("float32")]), dtype=np.float64)
    return np.concatenate([1 - p, p], axis=1)


@pytest.fixture(scope="module")
def named_models(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, dict[str, np.ndarray], Path]]:
    workdir = tmp_path_factory.mktemp("named")
    people, listed = people_model(), listed_model()
    export_keras(people, workdir, "people")
    export_keras(listed, workdir, "listed")
    expected = {"people": keras_people(people), "listed": keras_listed(listed)}
    server = start_server(
        workdir,
        workdir / "server.log",
        SERVICE_MODEL_REPOSITORY="models",
        SERVICE_DEFAULT_MODEL="people",
        SERVICE_BATCHING="on",
        SERVICE_BATCH_MAX_WAIT_MS="20",
    )
    yield server, expected, workdir / "models"
    assert server.stop() == 0, server.output()


def test_the_version_names_every_input_and_holds_the_lookups(
    named_models: tuple[Server, dict[str, np.ndarray], Path],
) -> None:
    _, expected, repository = named_models
    metadata = json.loads((repository / "people/1/metadata.json").read_text())
    spec = metadata["input"]
    assert spec["kind"] == "named"
    kinds = {i["name"]: (i["kind"], i["dtype"], i["shape"]) for i in spec["inputs"]}
    assert kinds["age"] == ("table", "float32", [1])
    assert kinds["city"][0] == kinds["plan"][0] == "text"
    assert "lookups.json" in metadata["files"]  # the vocabularies, covered by the hashes
    assert sorted(json.loads((repository / "people/1/lookups.json").read_text())) == [
        "city",
        "plan",
    ]
    saved = keras.saving.load_model(repository / "people/1/model.keras")  # takes raw values
    np.testing.assert_allclose(keras_people(saved), expected["people"], atol=TOLERANCE, rtol=0)
    listed = json.loads((repository / "listed/1/metadata.json").read_text())["input"]
    assert [(i["name"], i["kind"]) for i in listed["inputs"]] == [
        ("image", "image"),
        ("row", "table"),
    ]
    assert listed["inputs"][0]["pixel_range"] == [0.0, 255.0]


def _columns(instances: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {name: [instance[name] for instance in instances] for name in instances[0]}


def _v2_tensor(name: str, values: list[Any]) -> dict[str, Any]:
    if isinstance(values[0], str):
        return {"name": name, "datatype": "BYTES", "shape": [len(values)], "data": values}
    array = np.asarray(values, dtype=np.float64)
    array = array.reshape(len(values), -1) if array.ndim == 1 else array
    return {
        "name": name,
        "datatype": "FP64",
        "shape": list(array.shape),
        "data": array.ravel().tolist(),
    }


def test_every_protocol_answers_keras_for_named_inputs(
    named_models: tuple[Server, dict[str, np.ndarray], Path],
) -> None:
    server, expected, _ = named_models
    largest: dict[str, float] = {}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for name, instances in (("people", PEOPLE), ("listed", LISTED)):
            answers: dict[str, Any] = {}
            native = client.post(f"/models/{name}/predict", json={"instances": instances})
            assert native.status_code == 200, native.text
            answers["native"] = [p["probabilities"] for p in native.json()["predictions"]]
            v1 = client.post(f"/v1/models/{name}:predict", json={"instances": instances})
            assert v1.status_code == 200, v1.text
            answers["v1 instances"] = v1.json()["predictions"]
            columnar = client.post(
                f"/v1/models/{name}:predict", json={"inputs": _columns(instances)}
            )
            assert columnar.status_code == 200, columnar.text
            answers["v1 columnar"] = columnar.json()["outputs"]
            tensors = [_v2_tensor(k, v) for k, v in reversed(_columns(instances).items())]
            v2 = client.post(f"/v2/models/{name}/infer", json={"inputs": tensors})
            assert v2.status_code == 200, v2.text
            (out,) = [o for o in v2.json()["outputs"] if o["name"] == "probabilities"]
            answers["v2 json"] = np.reshape(out["data"], expected[name].shape)
            for protocol, got in answers.items():
                np.testing.assert_allclose(
                    got, expected[name], atol=TOLERANCE, rtol=0, err_msg=f"{name} {protocol}"
                )
                error = float(np.abs(np.asarray(got) - expected[name]).max())
                largest[protocol] = max(largest.get(protocol, 0.0), error)
    print("largest difference from Keras by protocol:", largest)


def test_concurrent_requests_go_through_the_batcher_and_stay_exact(
    named_models: tuple[Server, dict[str, np.ndarray], Path],
) -> None:
    server, expected, _ = named_models
    order = [i % len(PEOPLE) for i in range(48)]

    def ask(i: int) -> list[float]:
        body = {"instances": [PEOPLE[i]]}
        answer = httpx.post(f"{server.url}/models/people/predict", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["predictions"][0]["probabilities"])

    rows_before, calls_before = batched(server)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, order))
    np.testing.assert_allclose(got, expected["people"][order], atol=TOLERANCE, rtol=0)
    rows, calls = batched(server)
    assert rows - rows_before == len(order)  # each through the batcher, in whole calls:
    assert calls > calls_before
    # the adaptive batcher joins only requests that overlap, which a model this small
    # seldom lets happen; tests/inference/test_named.py shows that overlapping ones are.


def batched(server: Server) -> tuple[float, float]:
    """The rows and the model calls the batcher has run for ``people`` so far."""
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    rows, calls = (
        float(line.rsplit(" ", 1)[1])
        for part in ("sum", "count")
        for line in metrics.splitlines()
        if line.startswith(f'softmax_batch_rows_{part}{{model="people"}}')
    )
    return rows, calls


def test_tritonclient_sends_several_named_inputs_as_binary(
    named_models: tuple[Server, dict[str, np.ndarray], Path],
) -> None:
    server, expected, _ = named_models
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        metadata = client.get_model_metadata("people")
        assert {(i["name"], i["datatype"]) for i in metadata["inputs"]} == {
            ("age", "FP32"),
            ("income", "FP32"),
            ("city", "BYTES"),
            ("plan", "BYTES"),
        }
        inputs = []
        for name, values in _columns(PEOPLE).items():
            if isinstance(values[0], str):
                tensor = triton.InferInput(name, [len(values)], "BYTES")
                tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=object))
            else:
                tensor = triton.InferInput(name, [len(values), 1], "FP32")
                tensor.set_data_from_numpy(np.array(values, dtype=np.float32)[:, None])
            inputs.append(tensor)
        got = client.infer("people", inputs).as_numpy("probabilities")
        np.testing.assert_allclose(got, expected["people"], atol=TOLERANCE, rtol=0)
        image = triton.InferInput("image", list(IMAGES.shape), "FP32")
        image.set_data_from_numpy(IMAGES.astype(np.float32))
        row = triton.InferInput("row", list(ROWS.shape), "FP32")
        row.set_data_from_numpy(ROWS.astype(np.float32))
        listed = client.infer("listed", [row, image]).as_numpy("probabilities")
        np.testing.assert_allclose(listed, expected["listed"], atol=TOLERANCE, rtol=0)
        errors = [np.abs(got - expected["people"]).max(), np.abs(listed - expected["listed"]).max()]
        print("largest difference from Keras, tritonclient binary:", float(max(errors)))
    finally:
        client.close()


def test_the_metadata_endpoints_list_every_input(
    named_models: tuple[Server, dict[str, np.ndarray], Path],
) -> None:
    server, _, _ = named_models
    v2 = httpx.get(f"{server.url}/v2/models/listed").json()
    assert v2["inputs"] == [
        {"name": "image", "datatype": "FP32", "shape": [-1, 8, 8, 1]},
        {"name": "row", "datatype": "FP32", "shape": [-1, 3]},
    ]
    v1 = httpx.get(f"{server.url}/v1/models/people/metadata").json()
    signature = v1["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sorted(signature["inputs"]) == ["age", "city", "income", "plan"]
    assert signature["inputs"]["city"]["dtype"] == "DT_STRING"
    assert signature["inputs"]["age"]["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""},
        {"size": "1", "name": ""},
    ]


ONE = PEOPLE[0]
WITHOUT_CITY = {k: v for k, v in ONE.items() if k != "city"}
WITH_ZIP = {**ONE, "zip": 69001}
WIDE_AGE = {**ONE, "age": [41, 42]}


def _v2(instance: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": [_v2_tensor(k, [v]) for k, v in instance.items()]}


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/models/people/predict", {"instances": [WITHOUT_CITY]}, 422, "input 'city'"),
        ("/v1/models/people:predict", {"instances": [WITHOUT_CITY]}, 400, "input 'city'"),
        ("/v2/models/people/infer", _v2(WITHOUT_CITY), 400, "input 'city'"),
        ("/models/people/predict", {"instances": [WITH_ZIP]}, 422, "unknown input 'zip'"),
        ("/v1/models/people:predict", {"inputs": _columns([WITH_ZIP])}, 400, "input 'zip'"),
        ("/v2/models/people/infer", _v2(WITH_ZIP), 400, "unknown input 'zip'"),
        ("/models/people/predict", {"instances": [WIDE_AGE]}, 422, "input 'age'"),
        ("/v1/models/people:predict", {"instances": [WIDE_AGE]}, 400, "input 'age'"),
        ("/v2/models/people/infer", _v2(WIDE_AGE), 400, "input 'age'"),
        ("/models/people/predict", {"instances": [{**ONE, "city": 3}]}, 422, "input 'city'"),
        ("/models/people/predict", {"instances": [[1, 2]]}, 422, "naming each"),
        ("/models/listed/predict", {"instances": [{**LISTED[0], "row": [1]}]}, 422, "'row'"),
    ],
)
def test_a_missing_unknown_or_misshapen_input_is_named(
    named_models: tuple[Server, dict[str, np.ndarray], Path],
    path: str,
    body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    server, _, _ = named_models
    answer = httpx.post(server.url + path, json=body, timeout=30)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"], answer.text


def test_an_integer_lookup_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lookup = keras.layers.IntegerLookup(output_mode="one_hot")
    lookup.adapt(np.array([[1], [2], [3]]))
    code, size = keras.Input((1,), dtype="int64", name="code"), keras.Input((1,), name="size")
    x = keras.layers.concatenate([lookup(code), size])
    model = keras.Model({"code": code, "size": size}, keras.layers.Dense(2, "softmax")(x))
    model.save(tmp_path / "m.keras")
    argv = ["export", str(tmp_path / "m.keras"), "--name", "m"]
    assert train_main([*argv, "--model-repository", str(tmp_path / "models")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "IntegerLookup" in err[0], err
    assert not (tmp_path / "models" / "m").exists()
