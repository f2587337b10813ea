"""Table instances as objects of named features: numeric and categorical columns, missing
values and unseen categories, on a version whose metadata records its columns (served
through Keras), and on the default model, whose feature names are its columns."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from starlette.testclient import TestClient

from service.repository.artifact import Metadata, file_hashes
from service.settings import Settings
from tests.conftest import TrainedRepository, in_process

COLUMNS = [
    {"name": "bill_length_mm", "kind": "numeric", "fill": 44.5},
    {
        "name": "island",
        "kind": "categorical",
        "fill": "Biscoe",
        "vocabulary": ["Biscoe", "Dream", "Torgersen"],
    },
    {"name": "body_mass_g", "kind": "numeric", "fill": 4200.0},
]
WIDTH = 1 + 4 + 1


def reference_row(instance: dict[str, Any]) -> list[float]:
    """The encoding, written out by hand: value or fill; one-hot with a last 'other' slot."""
    island = instance["island"] if instance["island"] is not None else "Biscoe"
    one_hot = [float(island == word) for word in ("Biscoe", "Dream", "Torgersen")]
    one_hot.append(float(island not in ("Biscoe", "Dream", "Torgersen")))
    length = instance["bill_length_mm"]
    mass = instance["body_mass_g"]
    return [44.5 if length is None else length, *one_hot, 4200.0 if mass is None else mass]


def hand_written_version(
    repository: Path, name: str, columns: list[dict[str, Any]], model: keras.Model
) -> None:
    """Version 1 of ``name``: model.keras and metadata.json recording ``columns``."""
    feature_names = []
    for column in columns:
        if column["kind"] == "numeric":
            feature_names.append(column["name"])
        else:
            words = [*column["vocabulary"], "<other>"]
            feature_names += [f"{column['name']}={word}" for word in words]
    version = repository / name / "1"
    version.mkdir(parents=True)
    model.save(version / "model.keras")
    width = len(feature_names)
    metadata = Metadata(
        name=name,
        version=1,
        input_dim=width,
        input={"shape": [width], "kind": "table", "columns": columns},
        feature_names=feature_names,
        class_names=["Adelie", "Chinstrap", "Gentoo"],
        created_at=dt.datetime.now(dt.UTC).isoformat(),
        files=file_hashes(version, ["model.keras"]),
    )
    (version / "metadata.json").write_text(metadata.model_dump_json())


@pytest.fixture(scope="module")
def penguins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, keras.Model]:
    """A hand-written version recording a numeric, a categorical and a numeric column."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input(shape=(WIDTH,))
    x = keras.layers.Normalization(mean=[44.0, 0, 0, 0, 0, 4200.0], variance=[30, 1, 1, 1, 1, 6e5])(
        inputs
    )
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    repository = tmp_path_factory.mktemp("penguins") / "models"
    hand_written_version(repository, "penguins", COLUMNS, model)
    metadata = json.loads((repository / "penguins/1/metadata.json").read_text())
    assert metadata["feature_names"] == [
        "bill_length_mm",
        "island=Biscoe",
        "island=Dream",
        "island=Torgersen",
        "island=<other>",
        "body_mass_g",
    ]
    return repository, model


@pytest.fixture(scope="module")
def client(penguins: tuple[Path, keras.Model]) -> Iterator[TestClient]:
    with in_process(Settings(model_repository=penguins[0])) as c:
        yield c


INSTANCES = [
    {"bill_length_mm": 39.1, "island": "Torgersen", "body_mass_g": 3750},
    {"bill_length_mm": None, "island": "Dream", "body_mass_g": 3800.5},
    {"bill_length_mm": 46.5, "island": None, "body_mass_g": None},
    {"bill_length_mm": 50.0, "island": "Atlantis", "body_mass_g": 5000},
]


def test_named_features_are_encoded_as_recorded_and_match_keras(
    client: TestClient, penguins: tuple[Path, keras.Model]
) -> None:
    response = client.post("/predict", json={"instances": INSTANCES})
    assert response.status_code == 200, response.text
    x = np.array([reference_row(i) for i in INSTANCES], dtype=np.float32)
    expected = np.asarray(penguins[1](x), dtype=np.float64)
    predictions = response.json()["predictions"]
    np.testing.assert_allclose([p["probabilities"] for p in predictions], expected, atol=1e-6)
    assert [p["unseen"] for p in predictions] == [{}, {}, {}, {"island": "Atlantis"}]
    columnar = client.post("/predict", json={"instances": INSTANCES, "format": "columnar"})
    assert columnar.json()["unseen"] == [{}, {}, {}, {"island": "Atlantis"}]
    v1 = client.post("/v1/models/penguins:predict", json={"instances": INSTANCES}).json()
    np.testing.assert_allclose(v1["predictions"], expected, atol=1e-6)
    rows = client.post("/predict", json={"instances": x.tolist()}).json()["predictions"]
    assert "unseen" not in rows[0]  # plain rows: nothing to report
    np.testing.assert_allclose([p["probabilities"] for p in rows], expected, atol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"bill_length_mm": "long"},
            "expected a number or null for numeric feature "
            "'bill_length_mm', received 'long' in instances[0]",
        ),
        (
            {"island": 3},
            "expected a string or null for categorical feature 'island' (one of "
            "['Biscoe', 'Dream', 'Torgersen']), received 3.0 in instances[0]",
        ),
        (
            {"beak": 1.0},
            "expected only the model's features ['bill_length_mm', 'island', "
            "'body_mass_g'], received unknown feature 'beak' in instances[0]",
        ),
        (
            {"body_mass_g": ...},
            "expected a value (or null) for every feature of the model, "
            "received no 'body_mass_g' in instances[0]",
        ),
    ],
)
def test_a_wrong_named_instance_is_422_saying_which_feature(
    client: TestClient, change: dict[str, Any], message: str
) -> None:
    instance = {**INSTANCES[0], **change}
    instance = {k: v for k, v in instance.items() if v is not ...}
    response = client.post("/predict", json={"instances": [instance]})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == message
    v1 = client.post("/v1/models/penguins:predict", json={"instances": [instance]})
    assert v1.status_code == 400
    assert v1.json()["error"] == message


# --- categorical columns of numbers' text (forced with --categorical) ---------------------

#: An integer-coded column, zip codes (two of them the same number: the one written with
#: its leading zero, and without), and a numeric column.
CODED = [
    {"name": "code", "kind": "categorical", "fill": "2", "vocabulary": ["1", "2", "3"]},
    {
        "name": "zip",
        "kind": "categorical",
        "fill": "10001",
        "vocabulary": ["02134", "10001", "2134", "60601.0", "unknown"],
    },
    {"name": "x", "kind": "numeric", "fill": 0.5},
]


def coded_row(instance: dict[str, Any]) -> list[float]:
    """The encoding by hand: each category's position as the module docstring states it."""
    code, zip_code, x = instance["code"], instance["zip"], instance["x"]
    code_slot = {"1": 0, "2": 1, "3": 2, 1: 0, 2: 1, 3: 2, None: 1}.get(code, 3)
    zip_slot = {
        "02134": 0,
        "10001": 1,
        "2134": 2,
        "60601.0": 3,
        "unknown": 4,
        10001: 1,
        60601: 3,
        None: 1,
    }.get(zip_code, 5)
    row = [0.0] * 10
    row[code_slot] = row[4 + zip_slot] = 1.0
    return [*row, 0.5 if x is None else x]


@pytest.fixture(scope="module")
def coded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, keras.Model]]:
    keras.utils.set_random_seed(6)
    inputs = keras.Input(shape=(4 + 6 + 1,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    repository = tmp_path_factory.mktemp("coded") / "models"
    hand_written_version(repository, "coded", CODED, model)
    with in_process(Settings(model_repository=repository)) as c:
        yield c, model


CODED_INSTANCES = [
    {"code": 2, "zip": 10001, "x": 1.0},  # numbers: the entries that are their text
    {"code": "3", "zip": "02134", "x": None},  # strings: as before
    {"code": 3.0, "zip": 60601, "x": -1.0},  # 3.0 is 3; 60601 is "60601.0"'s number
    {"code": 7, "zip": 99999, "x": 0.0},  # no such category: unseen
    {"code": 2.5, "zip": "2134.0", "x": 2.0},  # a string must be the text exactly
    {"code": None, "zip": None, "x": 0.25},  # the fills
]


def test_a_categorical_column_of_numbers_takes_json_numbers_matching_its_categories_text(
    coded: tuple[TestClient, keras.Model],
) -> None:
    client, model = coded
    response = client.post("/predict", json={"instances": CODED_INSTANCES})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    x = np.array([coded_row(i) for i in CODED_INSTANCES], dtype=np.float32)
    assert x[:, :10].sum(axis=1).tolist() == [2.0] * 6  # one category per column
    assert x[3, 3] == x[3, 9] == x[4, 3] == x[4, 9] == 1.0  # the unseen ones: <other>
    expected = np.asarray(model(x), dtype=np.float64)
    np.testing.assert_allclose([p["probabilities"] for p in predictions], expected, atol=1e-6)
    assert [p["unseen"] for p in predictions] == [
        {},
        {},
        {},
        {"code": "7", "zip": "99999"},
        {"code": "2.5", "zip": "2134.0"},
        {},
    ]
    v1 = client.post("/v1/models/coded:predict", json={"instances": CODED_INSTANCES})
    np.testing.assert_allclose(v1.json()["predictions"], expected, atol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"zip": 2134},
            "expected a number that is one category's text, or a string, for categorical "
            "feature 'zip', received 2134, which is the text of ['02134', '2134'], in "
            "instances[0]; send the one meant as a string",
        ),
        ({"code": True}, "instances[0].code.float: input should be a valid number; received true"),
        ({"zip": False}, "received false"),
    ],
)
def test_a_number_matching_two_categories_or_a_boolean_is_422(
    coded: tuple[TestClient, keras.Model], change: dict[str, Any], message: str
) -> None:
    client, _ = coded
    instance = {**CODED_INSTANCES[0], **change}
    response = client.post("/predict", json={"instances": [instance]})
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]
    v1 = client.post("/v1/models/coded:predict", json={"instances": [instance]})
    assert v1.status_code == 400, v1.text


def test_the_default_model_takes_its_feature_names(trained: TrainedRepository) -> None:
    with in_process(Settings(model_repository=trained.repository)) as c:
        named = c.post("/predict", json={"instances": [{"x1": 15.0, "x2": 0.5}]}).json()
        rows = c.post("/predict", json={"instances": [[15.0, 0.5]]}).json()
        missing = c.post("/predict", json={"instances": [{"x1": 15.0, "x2": None}]})
    assert named == rows
    assert missing.status_code == 422
    assert missing.json()["error"] == (
        "expected a number for feature 'x2' (this version records no value for missing ones), "
        "received null in instances[0]"
    )
    metadata = json.loads((trained.repository / "blobs" / "1" / "metadata.json").read_text())
    assert metadata["feature_names"] == ["x1", "x2"]
