"""The background saved for explanations (``model_training.explanation``), a table with
categorical columns explained per named column through the service, and a table wider
than the exact limit (scikit-learn's breast cancer, 30 features) explained by KernelSHAP,
and a trained image model explained by occlusion against its training mean pixel.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

from model_training.explanation import background
from model_training.pipeline import TrainingJob, train_version
from service.inference import kernel_shap
from service.inference.explain import Background, Players, coalition_rows, exact
from service.inference.occlusion import heat_maps, occluded, patches
from service.inference.softmax import softmax
from service.repository.artifact import Column, Metadata
from service.settings import Settings
from tests.conftest import in_process
from tests.protocols.test_explain import reference_model
from tests.protocols.test_native import assert_error
from tests.training.test_tables_training import write_penguins, write_sklearn_csv


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


@pytest.fixture(scope="module")
def cancer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository of scikit-learn's breast cancer table (30 features, wider than the
    exact limit), trained for 3 epochs: the version's fit does not matter, its width does."""
    work = tmp_path_factory.mktemp("cancer")
    write_sklearn_csv(load_breast_cancer, work / "cancer.csv")
    job = TrainingJob(
        repository=work / "models",
        name="cancer",
        data=work / "cancer.csv",
        label_column="y",
        epochs=3,
        keras_progress=False,
        report=False,
    )
    train_version(job)
    return work / "models"


def test_a_table_wider_than_the_exact_limit_is_explained_by_kernel_shap(cancer: Path) -> None:
    version = cancer / "cancer" / "1"
    model, saved, meta = reference_model(version)
    data = load_breast_cancer().data
    rows = data[[0, 100]].round(4)
    with in_process(Settings(model_repository=cancer)) as http:
        started = time.perf_counter()
        response = http.post("/models/cancer/explain", json={"instances": rows.tolist()})
        elapsed = time.perf_counter() - started
        again = http.post("/v1/models/cancer:explain", json={"instances": rows.tolist()})
    assert response.status_code == again.status_code == 200, response.text
    body = response.json()
    assert body == again.json()  # the same request, the same sample, the same answer
    assert body["method"] == "kernel shap"
    assert body["features"] == meta["feature_names"]
    assert body["settings"] == {
        "output": "probability",
        "calibrated": True,
        "features": 30,
        "coalitions": 2050,
        "model_rows_per_instance": 20500,
        "samples": 2048,
    }
    print(f"2 instances of 30 features by kernel shap: {elapsed * 1000:.0f} ms")
    background = Background(saved.points, saved.weights, "")
    players = Players.features(meta["feature_names"])
    for row, answer in zip(rows.astype(np.float32), body["explanations"], strict=True):
        # The reference: the version's own LiteRT model, the instance's own seed.
        chosen = kernel_shap.plan(30, 2048, kernel_shap.seed(row))
        z = coalition_rows(row, background, players, chosen.masks).astype(np.float32)
        reference = kernel_shap.kernel_shap(model(z), background, chosen)
        assert reference.standard_errors is not None
        [explained] = answer["classes"]
        k = explained["index"]
        np.testing.assert_allclose(explained["attributions"], reference.values[:, k], atol=1e-6)
        np.testing.assert_allclose(
            explained["standard_errors"], reference.standard_errors[:, k], atol=1e-6
        )
        total = sum(explained["attributions"])
        assert abs(total - (explained["probability"] - explained["expected_value"])) < 1e-6
        assert explained["additivity_error"] < 1e-9
        assert all(e >= 0 for e in explained["standard_errors"])


def test_a_table_wider_than_the_sampled_limit_is_refused(cancer: Path) -> None:
    settings = Settings(model_repository=cancer, explain_max_sampled_features=29)
    with in_process(settings) as http:
        response = http.post("/models/cancer/explain", json={"instances": [[1.0] * 30]})
    assert_error(response, 422, "at most 29 features to explain")
    assert "SERVICE_EXPLAIN_MAX_SAMPLED_FEATURES" in response.json()["error"]


def test_a_trained_image_model_is_explained_against_its_training_mean_pixel(
    tmp_path: Path,
) -> None:
    from tests.training.test_images import tflite_outputs

    job = TrainingJob(
        repository=tmp_path / "models",
        name="digits",
        example="digits",
        epochs=1,
        keras_progress=False,
        report=False,
    )
    written = train_version(job)
    meta = written.metadata
    mean = meta["training_data"]["pixel_mean"]
    image = load_digits().images[0][:, :, None] * 255 / 16  # a 0, in the model's 0..255
    settings = Settings(model_repository=tmp_path / "models", explain_patch=4)
    with in_process(settings) as http:
        started = time.perf_counter()
        response = http.post("/models/digits/explain", json={"instances": [image.tolist()]})
        elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    body = response.json()
    print(f"one 8x8 image by occlusion: {elapsed * 1000:.1f} ms")
    assert body["baseline"] == {
        "kind": "training_mean",
        "description": "the training images' mean pixel value",
        "value": pytest.approx(mean),
    }
    assert body["settings"]["patches"] == 4
    # The reference: the version's own LiteRT model on the variants, its temperature.
    tiles = patches(8, 8, 4)
    rows = occluded(image.astype(np.float32), mean, tiles, dtype=np.float32)
    logits = tflite_outputs(written.path / "model.tflite", rows)[:, :10]
    temperature = meta["calibration"]["temperature"]
    reference = heat_maps(softmax(logits, temperature), tiles)
    [answer] = body["explanations"]
    [explained] = answer["classes"]
    np.testing.assert_allclose(
        explained["heatmap"], reference.maps[:, :, explained["index"]], atol=1e-6
    )
