"""Token-id models (an Embedding on the input): exported by the real CLI, validated before
the runtime, and a runtime failure that gets past the checks is a clear 422, never a 500."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
from starlette.testclient import TestClient

from service.settings import Settings
from tests.conftest import in_process, python_argv, subprocess_env

VOCABULARY, LENGTH, CLASSES = 1000, 12, 3
IDS = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 999], [0] * LENGTH]


def token_model(input_dtype: str, *, hidden_embedding: bool = False) -> keras.Model:
    """Ids -> Embedding(1000, 8) -> mean -> softmax; optionally behind a Reshape, where
    the export cannot see that the input is token ids."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape=(LENGTH,), dtype=input_dtype)
    x = keras.layers.Reshape((LENGTH,))(inputs) if hidden_embedding else inputs
    x = keras.layers.Embedding(VOCABULARY, 8)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def export(model: keras.Model, directory: Path, name: str) -> None:
    """``python -m model_training export`` into ``directory/models``, as a user would."""
    source = directory / f"{name}.keras"
    model.save(source)
    argv = ("python", "-m", "model_training", "export", str(source), "--name", name)
    result = subprocess.run(
        [*python_argv(argv), "--model-repository", str(directory / "models")],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, keras.Model]]:
    """Three token models exported into one repository, and the Keras models themselves."""
    directory = tmp_path_factory.mktemp("tokens")
    models = {
        "ids32": token_model("int32"),
        "idsfloat": token_model("float32"),
        "hidden": token_model("float32", hidden_embedding=True),
    }
    for name, model in models.items():
        export(model, directory, name)
    return directory / "models", models


@pytest.fixture(scope="module")
def client(repository: tuple[Path, dict[str, keras.Model]]) -> Iterator[TestClient]:
    with in_process(Settings(model_repository=repository[0], default_model="ids32")) as c:
        yield c


def test_export_records_the_token_range(repository: tuple[Path, dict[str, keras.Model]]) -> None:
    for name, dtype in (("ids32", "int32"), ("idsfloat", "float32")):
        metadata = json.loads((repository[0] / name / "1" / "metadata.json").read_text())
        assert metadata["input"] == {
            "shape": [LENGTH],
            "dtype": dtype,
            "kind": "token_ids",
            "id_range": [0, VOCABULARY - 1],
        }


@pytest.mark.parametrize("name", ["ids32", "idsfloat"])
def test_token_models_give_keras_probabilities_in_every_protocol(
    repository: tuple[Path, dict[str, keras.Model]], client: TestClient, name: str
) -> None:
    model = repository[1][name]
    expected = np.asarray(model(np.array(IDS, dtype=model.inputs[0].dtype)), dtype=np.float64)
    native = client.post(f"/models/{name}/predict", json={"instances": IDS})
    assert native.status_code == 200, native.text
    got = [p["probabilities"] for p in native.json()["predictions"]]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    v1 = client.post(f"/v1/models/{name}:predict", json={"instances": IDS})
    np.testing.assert_allclose(v1.json()["predictions"], expected, atol=1e-5)
    datatypes = ("INT32", "INT64") if name == "ids32" else ("INT32", "INT64", "FP32", "FP64")
    for datatype in datatypes:
        tensor = {"name": "ids", "shape": [2, LENGTH], "datatype": datatype, "data": IDS}
        v2 = client.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]})
        assert v2.status_code == 200, v2.text
        (probabilities, _) = v2.json()["outputs"]
        assert probabilities["datatype"] == ("FP64" if datatype == "FP64" else "FP32")
        np.testing.assert_allclose(
            np.reshape(probabilities["data"], (2, CLASSES)), expected, atol=1e-5
        )


def test_an_integer_model_refuses_float_tensors(client: TestClient) -> None:
    tensor = {"name": "ids", "shape": [2, LENGTH], "datatype": "FP32", "data": IDS}
    response = client.post("/v2/models/ids32/infer", json={"inputs": [tensor]})
    assert response.status_code == 400
    assert response.json()["error"] == (
        "expected input 'ids' of datatype INT32 or INT64, received 'FP32'"
    )


def test_metadata_gives_the_real_input_dtype(client: TestClient) -> None:
    (v2_input,) = client.get("/v2/models/ids32").json()["inputs"]
    assert v2_input == {"name": "input", "datatype": "INT32", "shape": [-1, LENGTH]}
    signature = client.get("/v1/models/ids32/metadata").json()["metadata"]["signature_def"]
    (tensor,) = signature["signature_def"]["serving_default"]["inputs"].values()
    assert tensor["dtype"] == "DT_INT32"


BAD_IDS = {
    "beyond the embedding": (2000, "expected token ids from 0 to 999", "received 2000"),
    "negative": (-1, "expected token ids from 0 to 999", "received -1"),
    "fractional": (2.7, "expected whole numbers as token ids", "received 2.7"),
}


@pytest.mark.parametrize("case", list(BAD_IDS))
@pytest.mark.parametrize("name", ["ids32", "idsfloat"])
def test_bad_token_ids_are_refused_before_the_runtime(
    client: TestClient, name: str, case: str
) -> None:
    value, expected, received = BAD_IDS[case]
    row = [*IDS[0][:-1], value]
    for path, status in ((f"/models/{name}/predict", 422), (f"/v1/models/{name}:predict", 400)):
        response = client.post(path, json={"instances": [IDS[1], row]})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert expected in error
        assert received in error
        assert "instances[1][11]" in error
    assert client.get("/health/ready").status_code == 200


def test_a_runtime_failure_is_a_clear_422_logged_with_the_request_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # The Reshape hides the Embedding from the export, so no id range is recorded and the
    # out-of-range id reaches LiteRT, which fails on it.
    row = [*IDS[0][:-1], 5000]
    with caplog.at_level(logging.WARNING, logger="service.dataplane"):
        response = client.post(
            "/models/hidden/predict", json={"instances": [row]}, headers={"X-Request-ID": "tok-1"}
        )
    assert response.status_code == 422
    error = response.json()["error"]
    assert "received instances its runtime failed on" in error
    assert "tok-1" in error
    assert "tok-1" in caplog.text
    assert "gather" not in error.lower()  # the runtime's own words stay in the log
    ok = client.post("/models/hidden/predict", json={"instances": IDS})
    assert ok.status_code == 200
