"""Explanations through the routes: ``/models/{name}/explain`` and KServe V1's ``:explain``.

The reference: the version's own ``model.tflite`` run here by LiteRT, its float64 softmax
with the version's temperature, and the background saved in its ``metadata.json``, given
to ``service.inference.explain`` and to ``shap``'s exact explainer (its background the
k-means points repeated in proportion to their weights). The routes must give the same
values, so the background, the players, the temperature and the class chosen are
checked, not only the arithmetic. The KServe SDK's ``InferenceRESTClient.explain`` is
checked against the real server.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from service.inference.explain import Background, exact
from service.inference.occlusion import heat_maps, occluded, patches
from service.inference.softmax import softmax
from service.settings import Settings
from tests.conftest import Server, TrainedRepository, in_process
from tests.protocols.test_native import assert_error

ROWS = [[15.0, 0.0], [29.5, 14.2], [22.5, 7.5]]
Array = npt.NDArray[np.float64]


def version_dir(trained: TrainedRepository) -> Path:
    model = trained.repository / "blobs"
    return model / str(max(int(p.name) for p in model.iterdir() if p.name.isdigit()))


def reference_model(directory: Path) -> tuple[Any, Background, dict[str, Any]]:
    """The version's probabilities as a function of float64 rows (LiteRT, float64 softmax),
    its saved background and its metadata."""
    from ai_edge_litert.interpreter import Interpreter

    meta = json.loads((directory / "metadata.json").read_text())
    interpreter = Interpreter(model_path=str(directory / "model.tflite"))
    index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    temperature = (meta.get("calibration") or {}).get("temperature", 1.0)
    classes = len(meta["class_names"])

    def probabilities(z: Array) -> Array:
        interpreter.resize_tensor_input(index, list(z.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, z.astype(np.float32))
        interpreter.invoke()
        logits = interpreter.get_tensor(output)[:, :classes].astype(np.float64)
        return np.asarray(softmax(logits, temperature))

    saved = meta["explanation"]
    background = Background(np.array(saved["points"]), np.array(saved["weights"]), "saved")
    return probabilities, background, meta


def test_training_saves_a_weighted_kmeans_background(trained: TrainedRepository) -> None:
    meta = json.loads((version_dir(trained) / "metadata.json").read_text())
    saved = meta["explanation"]
    assert saved["method"] == "kmeans"
    assert len(saved["points"]) == len(saved["weights"]) == 10
    assert {len(p) for p in saved["points"]} == {meta["input_dim"]}
    assert sum(saved["weights"]) == pytest.approx(1.0, abs=1e-12)
    counts = np.array(saved["weights"]) * saved["rows"]  # cluster sizes
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-6)


def test_the_native_route_gives_explain_pys_values_on_the_versions_model(
    client: httpx.Client, trained: TrainedRepository
) -> None:
    model, background, meta = reference_model(version_dir(trained))
    response = client.post("/models/blobs/explain", json={"instances": ROWS})
    assert response.status_code == 200, response.text
    body = response.json()

    assert body["method"] == "exact shapley"
    assert body["baseline"]["kind"] == "kmeans"
    assert body["baseline"]["points"] == 10
    assert body["features"] == meta["feature_names"]
    assert body["settings"] == {
        "output": "probability",
        "calibrated": True,
        "features": 2,
        "coalitions": 4,
        "model_rows_per_instance": 40,
    }
    expected = exact(model, np.array(ROWS), background)
    predicted = client.post("/predict", json={"instances": ROWS, "format": "columnar"}).json()
    for i, (answer, reference) in enumerate(zip(body["explanations"], expected, strict=True)):
        np.testing.assert_allclose(
            answer["probabilities"], predicted["probabilities"][i], atol=1e-6
        )
        assert answer["argmax"] == predicted["argmax"][i]
        [explained] = answer["classes"]  # the predicted class, by default
        k = explained["index"]
        assert k == answer["argmax"]
        assert explained["label"] == meta["class_names"][k]
        np.testing.assert_allclose(explained["attributions"], reference.values[:, k], atol=1e-6)
        assert explained["expected_value"] == pytest.approx(reference.expected[k], abs=1e-6)
        total = sum(explained["attributions"])
        additivity = abs(total - (explained["probability"] - explained["expected_value"]))
        assert additivity < 1e-6
        assert explained["additivity_error"] < 1e-6


def test_the_route_agrees_with_shaps_exact_explainer_on_the_same_model(
    client: httpx.Client, trained: TrainedRepository
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import shap

        model, background, meta = reference_model(version_dir(trained))
        rows = meta["explanation"]["rows"]
        counts = np.round(background.weights * rows).astype(int)
        data = np.repeat(background.points, counts, axis=0)
        explainer = shap.explainers.Exact(model, shap.maskers.Independent(data, len(data)))
        reference = explainer(np.array(ROWS))
    classes = list(range(len(meta["class_names"])))
    body = client.post("/models/blobs/explain", json={"instances": ROWS, "classes": classes})
    assert body.status_code == 200, body.text
    for i, answer in enumerate(body.json()["explanations"]):
        values = np.array([c["attributions"] for c in answer["classes"]]).T  # (features, K)
        np.testing.assert_allclose(values, reference.values[i], rtol=0, atol=1e-6)
        expected = [c["expected_value"] for c in answer["classes"]]
        np.testing.assert_allclose(expected, reference.base_values[i], rtol=0, atol=1e-6)


def test_named_features_classes_by_name_and_the_v1_verb_give_the_same_answer(
    client: httpx.Client,
) -> None:
    native = client.post(
        "/models/blobs/versions/1/explain",
        json={"instances": [{"x1": 15.0, "x2": 0.0}], "classes": ["0", "2"]},
    )
    v1 = client.post(
        "/v1/models/blobs:explain", json={"instances": [[15.0, 0.0]], "classes": [0, 2]}
    )
    columnar = client.post(
        "/v1/models/blobs/versions/1:explain", json={"inputs": [[15.0, 0.0]], "classes": [0, 2]}
    )
    assert native.status_code == v1.status_code == columnar.status_code == 200, native.text
    assert native.json() == v1.json() == columnar.json()
    assert [c["label"] for c in native.json()["explanations"][0]["classes"]] == ["0", "2"]


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/models/blobs/explain", {"instances": ROWS, "classes": ["7"]}, 422, "received '7'"),
        ("/models/blobs/explain", {"instances": ROWS, "classes": [4]}, 422, "index 0 to 3"),
        ("/v1/models/blobs:explain", {"instances": ROWS, "classes": ["x"]}, 400, "classes"),
        ("/models/blobs/explain", {"instances": ROWS * 6}, 413, "SERVICE_EXPLAIN_MAX_INSTANCES"),
        ("/v1/models/blobs:explain", {"instances": ROWS * 6}, 413, "at most 16 instances"),
        ("/models/blobs/explain", {"instances": [[1.0, 2.0, 3.0]]}, 422, "2 features"),
        ("/models/nope/explain", {"instances": ROWS}, 404, "nope"),
        ("/models/blobs/versions/9/explain", {"instances": ROWS}, 404, "9"),
        ("/models/blobs/explain", {"instances": ROWS, "classes": []}, 422, "classes"),
    ],
)
def test_bad_explanations_are_clear_4xx(
    client: httpx.Client, path: str, body: dict[str, Any], status: int, fragment: str
) -> None:
    assert_error(client.post(path, json=body), status, fragment)


def test_a_table_wider_than_the_exact_limit_gets_kernel_shap_and_beyond_a_422(
    client: httpx.Client, trained: TrainedRepository
) -> None:
    settings = Settings(model_repository=trained.repository, explain_max_features=1)
    with in_process(settings) as http:
        sampled = http.post("/models/blobs/explain", json={"instances": ROWS})
    assert sampled.status_code == 200, sampled.text
    body = sampled.json()
    assert body["method"] == "kernel shap"
    # 2 features: the budget (at least 2048) covers both one-feature coalitions, so
    # KernelSHAP's regression gives the exact values, with standard errors of zero.
    assert body["settings"]["samples"] == 2048
    assert body["settings"]["coalitions"] == 4
    exact_body = client.post("/models/blobs/explain", json={"instances": ROWS}).json()
    for ours, exact_answer in zip(body["explanations"], exact_body["explanations"], strict=True):
        [explained], [reference] = ours["classes"], exact_answer["classes"]
        np.testing.assert_allclose(explained["attributions"], reference["attributions"], atol=1e-9)
        assert explained["standard_errors"] == [0.0, 0.0]
        assert "standard_errors" not in reference
        assert explained["additivity_error"] < 1e-9

    narrow = Settings(
        model_repository=trained.repository, explain_max_features=1, explain_max_sampled_features=1
    )
    with in_process(narrow) as http:
        response = http.post("/models/blobs/explain", json={"instances": ROWS[:1]})
    assert_error(response, 422, "at most 1 features to explain (SERVICE_EXPLAIN_MAX_SAMPLED")


def test_explanations_are_counted_apart_from_predictions(client: httpx.Client) -> None:
    def scrape() -> str:
        return client.get("/metrics").text

    def value(text: str, prefix: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    explained = 'softmax_explained_instances_total{method="exact shapley",model="blobs"'
    predicted = 'softmax_predicted_class_total{class_name="'
    before = scrape()
    assert client.post("/models/blobs/explain", json={"instances": ROWS}).status_code == 200
    after = scrape()
    assert value(after, explained) - value(before, explained) == len(ROWS)
    assert value(after, "softmax_explanation_model_rows_total") - value(
        before, "softmax_explanation_model_rows_total"
    ) == 40 * len(ROWS)
    assert value(after, predicted) == value(before, predicted)  # not predictions
    route = 'softmax_requests_total{endpoint="/models/{name}/explain",model="blobs"'
    assert value(after, route) - value(before, route) == 1


def test_the_kserve_sdks_explain_call_gets_the_attributions(server: Server) -> None:
    from kserve import InferenceRESTClient, RESTConfig

    async def ask() -> dict[str, Any]:
        async with InferenceRESTClient(RESTConfig(protocol="v1", timeout=30)) as kserve:
            return await kserve.explain(server.url, "blobs", {"instances": ROWS})

    answer = asyncio.run(ask())
    direct = httpx.post(f"{server.url}/models/blobs/explain", json={"instances": ROWS}, timeout=30)
    assert answer == direct.json()
    assert len(answer["explanations"]) == len(ROWS)


# --- images: occlusion ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gray(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """``tests/protocols/test_images.py``'s small gray model (8x8x1, 3 classes, raw pixels)
    as a bare ``model.keras``: a version that records nothing of its images."""
    from tests.protocols.test_images import build

    repository = tmp_path_factory.mktemp("gray") / "models"
    model = build("gray")
    (repository / "gray" / "1").mkdir(parents=True)
    model.save(repository / "gray" / "1" / "model.keras")
    return repository, model


def test_an_image_model_is_explained_by_occlusion_heat_maps(gray: tuple[Path, Any]) -> None:
    from tests.protocols.test_images import b64, keras_probabilities, pixels, png

    repository, model = gray
    image = pixels((8, 8, 1), 3)
    settings = Settings(model_repository=repository, explain_patch=3)  # 3 x 3 patches
    ask = {"classes": [0, 2]}
    with in_process(settings) as http:
        nested = http.post(
            "/models/gray/explain", json={"instances": [image.astype(float).tolist()], **ask}
        )
        file = http.post(
            "/v1/models/gray:explain", json={"instances": [{"b64": b64(png(image))}], **ask}
        )
    assert nested.status_code == file.status_code == 200, nested.text
    body = nested.json()
    assert body == file.json()  # a PNG of the pixels is the pixels (raw, 0..255)
    assert body["method"] == "occlusion"
    assert body["baseline"]["kind"] == "zeros"
    assert body["baseline"]["value"] == 0.0
    assert body["settings"] == {
        "output": "probability",
        "calibrated": True,
        "patch": 3,
        "patches": 9,  # 3 x 3, the last row and column 2 pixels wide
        "model_rows_per_instance": 10,
    }
    tiles = patches(8, 8, 3)
    reference = heat_maps(keras_probabilities(model, occluded(image, 0.0, tiles)), tiles)
    [answer] = body["explanations"]
    np.testing.assert_allclose(answer["probabilities"], reference.prediction, atol=1e-5)
    for explained in answer["classes"]:
        k = explained["index"]
        heatmap = np.array(explained["heatmap"])
        assert heatmap.shape == (8, 8)  # the image's size
        np.testing.assert_allclose(heatmap, reference.maps[:, :, k], atol=1e-5)


def test_an_image_of_more_patches_than_the_limit_is_refused(gray: tuple[Path, Any]) -> None:
    settings = Settings(model_repository=gray[0], explain_patch=1, explain_max_patches=63)
    with in_process(settings) as http:
        response = http.post("/models/gray/explain", json={"instances": [[[[0.0]] * 8] * 8]})
        text = http.post("/models/gray/explain", json={"instances": ["a string"]})
    assert_error(response, 422, "at most 63 patches to explain (SERVICE_EXPLAIN_MAX_PATCHES")
    assert "of 64 patches of 1" in response.json()["error"]
    assert text.status_code == 422
