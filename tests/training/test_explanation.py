"""The background saved for explanations (``model_training.explanation``), and a table with
categorical columns explained per named column through the service.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_training.explanation import background
from model_training.pipeline import TrainingJob, train_version
from service.inference.explain import Background, Players, exact
from service.repository.artifact import Column, Metadata
from service.settings import Settings
from tests.conftest import in_process
from tests.protocols.test_explain import reference_model
from tests.training.test_tables_training import write_penguins


def test_the_background_is_kmeans_centroids_weighted_by_cluster_share() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 5.0]])
    x = np.concatenate(
        [
            c + rng.normal(scale=0.01, size=(n, 2))
            for c, n in zip(centres, [50, 30, 20], strict=True)
        ]
    )
    saved = background(x)
    assert saved["method"] == "kmeans"
    assert saved["rows"] == 100
    assert len(saved["points"]) == len(saved["weights"]) == 10  # min(10, rows)
    assert sum(saved["weights"]) == pytest.approx(1.0, abs=1e-12)
    points, weights = np.array(saved["points"]), np.array(saved["weights"])
    np.testing.assert_allclose(weights @ points, x.mean(axis=0), atol=1e-9)  # centroids
    for centre, share in zip(centres, [0.5, 0.3, 0.2], strict=True):  # each blob's share
        near = np.linalg.norm(points - centre, axis=1) < 1
        assert weights[near].sum() == pytest.approx(share)


def test_few_rows_give_one_point_each_and_categorical_tables_real_rows() -> None:
    x = np.array([[1.0, 0.0, 1.0], [2.0, 1.0, 0.0], [3.0, 1.0, 0.0]])
    saved = background(x)
    assert sorted(map(tuple, saved["points"])) == sorted(map(tuple, x.tolist()))
    assert saved["weights"] == pytest.approx([1 / 3] * 3)
    rng = np.random.default_rng(1)
    one_hot = np.eye(3)[rng.integers(0, 3, size=200)]
    table = np.column_stack([rng.normal(size=200), one_hot])
    medoids = background(table, categorical=True)
    assert medoids["method"] == "kmedoids"
    rows = {tuple(r) for r in table.tolist()}
    assert all(tuple(p) in rows for p in medoids["points"])  # one-hot inputs stay one-hot


def test_the_metadata_refuses_a_background_of_the_wrong_width() -> None:
    good = json.loads(
        Metadata(
            name="m", version=1, input_dim=2, feature_names=["a", "b"], class_names=["0", "1"],
            created_at="now", files={},
        ).model_dump_json()
    )  # fmt: skip
    good["explanation"] = {"rows": 4, "points": [[1.0, 2.0]], "weights": [1.0]}
    assert Metadata.model_validate(good).explanation is not None
    with pytest.raises(ValueError, match="input_dim=2"):
        Metadata.model_validate({**good, "explanation": {**good["explanation"], "points": [[1.0]]}})
    with pytest.raises(ValueError, match="summing to 1"):
        Metadata.model_validate({**good, "explanation": {**good["explanation"], "weights": [0.5]}})


def test_a_categorical_table_is_explained_per_named_column(tmp_path: Path) -> None:
    write_penguins(tmp_path / "penguins.csv")
    job = TrainingJob(
        repository=tmp_path / "models",
        name="penguins",
        data=tmp_path / "penguins.csv",
        keras_progress=False,
        report=False,
    )
    written = train_version(job)
    saved = written.metadata["explanation"]
    assert saved["method"] == "kmedoids"
    model, points, meta = reference_model(written.path)
    columns = [Column.model_validate(c) for c in meta["input"]["columns"]]
    names = [c.name for c in columns]
    instance = {
        "island": "Dream",
        "bill_length_mm": 48.0,
        "bill_depth_mm": None,
        "flipper_length_mm": 196.0,
        "body_mass_g": 3700.0,
        "sex": "unknown",
    }
    with in_process(Settings(model_repository=tmp_path / "models")) as http:
        response = http.post("/models/penguins/explain", json={"instances": [instance]})
        encoded = http.post(
            "/models/penguins/predict", json={"instances": [instance], "format": "columnar"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["features"] == names  # six players, not eleven one-hot inputs
    assert body["baseline"]["kind"] == "kmedoids"
    assert body["settings"]["coalitions"] == 2**6
    [answer] = body["explanations"]
    [explained] = answer["classes"]
    np.testing.assert_allclose(
        answer["probabilities"], encoded.json()["probabilities"][0], atol=1e-6
    )
    row = np.array(
        [0, 1, 0, 0, 48.0, columns[2].fill, 196.0, 3700.0, 0, 0, 1], dtype=np.float64
    )  # Dream; the fill for the missing depth; an unseen sex
    [reference] = exact(
        model, row[None], Background(points.points, points.weights, ""), Players.columns(columns)
    )
    np.testing.assert_allclose(
        explained["attributions"], reference.values[:, explained["index"]], atol=1e-6
    )
    assert explained["additivity_error"] < 1e-9
