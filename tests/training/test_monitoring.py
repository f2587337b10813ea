"""The metadata's ``monitoring`` block (``model_training.monitoring``): the binning convention
the service will repeat, categorical shares with missing cells, and the block of a trained
blobs model, a CSV with a categorical column and missing values, and an exported model,
checked against the versions' own ``model.keras``."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy  # type: ignore[import-untyped]

from model_training import monitoring
from model_training.artifact import Metadata
from model_training.cli import main as train_main
from model_training.data import default_test_size, make_blobs, split, split_rows

CITIES = ("Lyon", "Paris", "Nice", "Brest")


def _lerp_quantile(ordered: list[float], q: float) -> float:
    """numpy's default (linear) quantile of sorted values, written out in Python floats."""
    h = (len(ordered) - 1) * q
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (h - low) * (ordered[high] - ordered[low])


@pytest.mark.parametrize("n", [7, 100, 1001, 5000])
def test_edges_are_the_deduplicated_deciles(n: int) -> None:
    values = np.random.default_rng(n).normal(size=n)
    ordered = sorted(values.tolist())
    expected = sorted({_lerp_quantile(ordered, k / 10) for k in range(1, 10)})
    np.testing.assert_allclose(monitoring.quantile_edges(values), expected, rtol=1e-12)


def test_a_value_on_an_edge_falls_in_the_bin_below_it() -> None:
    edges = [1.0, 2.0]
    values = [0.5, 1.0, 1.5, 2.0, np.nextafter(2.0, 3.0), 9.0]
    assert monitoring.bin_index(edges, values).tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("seed", range(4))
def test_fractions_match_an_independent_histogram(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Rounded, so many values sit exactly on an edge (the convention matters there).
    values = np.round(rng.gamma(2.0, 3.0, size=997), 1)
    reference = monitoring.histogram(values)
    edges = np.asarray(reference["edges"])
    # The same bins by hand: bin i counts the values with edges[i-1] < v <= edges[i].
    by_hand = [sum(1 for e in edges.tolist() if e < v) for v in values.tolist()]
    counts = np.bincount(by_hand, minlength=len(edges) + 1)
    np.testing.assert_array_equal(reference["fractions"], counts / len(values))
    # np.histogram's bins are [a, b): on the negated values they are this module's (a, b].
    mirrored, _ = np.histogram(-values, bins=[-np.inf, *(-edges[::-1]), np.inf])
    np.testing.assert_array_equal(counts, mirrored[::-1])
    assert math.isclose(sum(reference["fractions"]), 1.0)


def test_few_distinct_values_give_fewer_edges() -> None:
    # 101 values: every decile falls on a value (no interpolation), eight of them on 0.
    reference = monitoring.numeric_feature("flag", [0.0] * 81 + [1.0] * 20)
    assert reference["edges"] == [0.0, 1.0]
    assert reference["fractions"] == [81 / 101, 20 / 101, 0.0]
    assert reference["missing"] == 0.0


def test_numeric_missing_values_are_counted_apart_from_the_bins() -> None:
    values = [1.0, 2.0, math.nan, 3.0, math.nan, 4.0, 5.0, 6.0, 7.0, 8.0]
    reference = monitoring.numeric_feature("x", values)
    assert reference["missing"] == 0.2
    assert math.isclose(sum(reference["fractions"]), 1.0)
    assert monitoring.numeric_feature("x", [math.nan, math.nan])["fractions"] is None


def test_categorical_shares_of_the_present_cells_with_other_and_missing() -> None:
    cells: list[str | None] = ["Paris"] * 5 + ["Lyon"] * 3 + [None] * 2
    cells += [f"village {i:02d}" for i in range(60)]  # one each: 10 kept, 50 in "other"
    reference = monitoring.categorical_feature("city", cells)
    present = len(cells) - 2
    categories = reference["categories"]
    assert len(categories) == monitoring.MAX_CATEGORIES
    assert list(categories)[:3] == ["Paris", "Lyon", "village 00"]  # ties in text order
    assert categories["Paris"] == 5 / present
    assert categories["Lyon"] == 3 / present
    assert "village 47" in categories
    assert "village 48" not in categories
    assert reference["other"] == 12 / present
    assert reference["missing"] == 2 / len(cells)
    assert math.isclose(sum(categories.values()) + reference["other"], 1.0)


def test_entropy_is_the_calibrated_probabilities_entropy_in_nats() -> None:
    logits = np.random.default_rng(0).normal(scale=4.0, size=(50, 4))
    logits[0] = [1600.0, 0.0, 0.0, 0.0]  # certain: exp underflows to 0, entropy 0
    p = monitoring.calibrated_probabilities(logits, 2.0)
    z = logits / 2.0
    expected = np.exp(z - z.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    np.testing.assert_allclose(monitoring.entropy(p), scipy_entropy(expected, axis=1), atol=1e-12)
    assert monitoring.entropy(p)[0] == 0.0


def _no_nan(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"metadata.json holds {constant}")

    return json.loads(text, parse_constant=refuse)


def _metadata(repository: Path, name: str) -> dict[str, Any]:
    document: dict[str, Any] = _no_nan((repository / name / "1" / "metadata.json").read_text())
    Metadata.model_validate(document)  # the service reads it as before
    return document


def _check_histograms(block: dict[str, Any]) -> None:
    """Every distribution's fractions sum to 1, one more than its edges."""
    numeric = [f for f in block["features"] if f["kind"] == "numeric"]
    distributions = [block["entropy"], *numeric]
    if block["ood_distance"] is not None:
        distributions.append(block["ood_distance"])
    for distribution in distributions:
        assert len(distribution["fractions"]) == len(distribution["edges"]) + 1
        assert distribution["edges"] == sorted(set(distribution["edges"]))
        assert math.isclose(sum(distribution["fractions"]), 1.0)
    for feature in block["features"]:
        if feature["kind"] == "categorical":
            assert math.isclose(sum(feature["categories"].values()) + feature["other"], 1.0)
    assert math.isclose(sum(block["class_prior"]), 1.0)
    assert math.isclose(sum(block["predicted_mix"]), 1.0)


def _check_outputs(
    block: dict[str, Any], metadata: dict[str, Any], model_path: Path, x: np.ndarray, y: np.ndarray
) -> None:
    """The output side, recomputed from the version's ``model.keras`` on the rows ``x``."""
    model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    head = keras.Model(model.inputs, model.get_layer("logits").output)
    z = np.asarray(head.predict(x, verbose=0), dtype=np.float64)
    z /= metadata["calibration"]["temperature"]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    k = len(metadata["class_names"])
    assert block["rows"] == len(y)
    assert block["class_prior"] == (np.bincount(y, minlength=k) / len(y)).tolist()
    predicted = np.asarray(model.predict(x, verbose=0)).argmax(axis=1)
    assert block["predicted_mix"] == (np.bincount(predicted, minlength=k) / len(y)).tolist()
    mean = float(scipy_entropy(p, axis=1).mean())
    assert math.isclose(block["entropy"]["mean"], mean, rel_tol=1e-4, abs_tol=1e-9)
    ood = metadata["training_data"]["ood"]
    # The distance by hand: sqrt of the smallest (x - m)^T P (x - m) over the class means.
    diff = x.astype(np.float64)[:, None, :] - np.asarray(ood["class_means"])[None]
    squared = np.einsum("nkd,de,nke->nk", diff, np.asarray(ood["precision"]), diff)
    distances = np.sqrt(np.maximum(squared.min(axis=1), 0.0))
    rate = block["ood_distance"]["rate"]
    assert rate == float(np.mean(distances > ood["threshold"]))
    assert rate == ood["train_flagged"]  # the same rows the reference was fitted on
    np.testing.assert_allclose(
        block["ood_distance"]["edges"],
        np.unique(np.quantile(distances, np.arange(1, 10) / 10)),
        rtol=1e-9,
    )


def test_the_default_blobs_version_records_its_reference(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    assert train_main(["--model-repository", str(repository), "--quiet", "--no-report"]) == 0
    metadata = _metadata(repository, "blobs")
    block = metadata["monitoring"]
    assert block["computed_on"] == "train"
    assert block["bins"] == 10
    _check_histograms(block)
    parts = split(make_blobs(1000, seed=42), 250, 42)  # the training part: validation rows too
    assert [f["name"] for f in block["features"]] == ["x1", "x2"]
    for feature in block["features"]:
        assert feature["missing"] == 0.0
        np.testing.assert_allclose(feature["fractions"], [0.1] * 10, atol=1 / 750)
    model = repository / "blobs" / "1" / "model.keras"
    _check_outputs(block, metadata, model, parts.x_train, parts.y_train)


def _write_csv(path: Path, rows: int = 240) -> list[list[str]]:
    """Two numeric columns (``size`` with missing cells), a city (categorical, missing cells
    too) and a label that depends on them."""
    rng = np.random.default_rng(7)
    body = []
    for i in range(rows):
        label = i % 3
        size = rng.normal(2.0 * label, 0.7)
        weight = rng.normal(-label, 1.0)
        city = CITIES[(label + int(rng.integers(0, 2))) % len(CITIES)]
        body.append(
            [
                "" if i % 11 == 0 else f"{size:.3f}",
                f"{weight:.3f}",
                "NA" if i % 13 == 0 else city,
                f"c{label}",
            ]
        )
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["size", "weight", "city", "y"])
        writer.writerows(body)
    return body


def test_a_csv_version_bins_its_raw_columns_with_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "shop.csv"
    body = _write_csv(path)
    repository = tmp_path / "models"
    argv = ["--model-repository", str(repository), "--data", str(path), "--label-column", "y"]
    assert train_main([*argv, "--quiet", "--no-report"]) == 0
    metadata = _metadata(repository, "shop")
    block = metadata["monitoring"]
    _check_histograms(block)
    train_rows, _ = split_rows(len(body), default_test_size(len(body), 3), 42)
    rows = [body[i] for i in train_rows]
    size, weight, city = block["features"]
    assert (size["name"], size["kind"], city["kind"]) == ("size", "numeric", "categorical")
    assert size["missing"] == sum(row[0] == "" for row in rows) / len(rows) > 0
    present = sorted(float(row[0]) for row in rows if row[0] != "")
    expected = sorted({_lerp_quantile(present, k / 10) for k in range(1, 10)})
    np.testing.assert_allclose(size["edges"], expected, rtol=1e-12)
    assert weight["missing"] == 0.0
    cities = Counter(row[2] for row in rows if row[2] != "NA")
    assert city["missing"] == sum(row[2] == "NA" for row in rows) / len(rows) > 0
    assert city["categories"] == {c: n / cities.total() for c, n in cities.most_common()}
    assert city["other"] == 0.0
    # The model's inputs for these rows, encoded as the service would from the metadata.
    from model_training.pipeline import TrainingJob, load_table

    table = load_table(TrainingJob(data=path, label_column="y"), path)
    x, y = table.parts.x_train, table.parts.y_train
    _check_outputs(block, metadata, repository / "shop" / "1" / "model.keras", x, y)


def test_an_exported_version_says_it_has_no_reference(tmp_path: Path) -> None:
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    source = tmp_path / "foreign.keras"
    model.save(source)
    repository = tmp_path / "models"
    argv = ["export", str(source), "--name", "foreign", "--model-repository", str(repository)]
    assert train_main(argv) == 0
    metadata = _metadata(repository, "foreign")
    assert "monitoring" in metadata
    assert metadata["monitoring"] is None


def _check_predictions(block: dict[str, Any], metadata: dict[str, Any], p: np.ndarray) -> None:
    """The output side against the version's own softmax ``p`` (from ``model.keras``), the
    temperature applied here as the service does: softmax(log p / T)."""
    k = len(metadata["class_names"])
    z = np.log(np.maximum(p.astype(np.float64), 1e-300)) / metadata["calibration"]["temperature"]
    calibrated = np.exp(z - z.max(axis=1, keepdims=True))
    calibrated /= calibrated.sum(axis=1, keepdims=True)
    assert block["predicted_mix"] == (np.bincount(p.argmax(axis=1), minlength=k) / len(p)).tolist()
    mean = float(scipy_entropy(calibrated, axis=1).mean())
    assert math.isclose(block["entropy"]["mean"], mean, rel_tol=1e-3)
    assert block["ood_distance"]["rate"] == metadata["training_data"]["ood"]["train_flagged"]


def test_a_text_version_records_its_reference_on_the_training_texts(tmp_path: Path) -> None:
    import tensorflow as tf

    from model_training.text_training import _split, load_text_csv

    rng = np.random.default_rng(3)
    words = {"pos": ["great", "superb", "loved"], "neg": ["awful", "dull", "boring"]}
    filler = ["the", "film", "plot", "was", "and", "a", "story"]
    rows = [("review", "label")]
    for i in range(200):
        label = ("pos", "neg")[i % 2]
        text = [*rng.choice(filler, 5), *rng.choice(words[label], 2)]
        rows.append((" ".join(rng.permutation(text)), label))
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    repository = tmp_path / "models"
    argv = ["--data", str(path), "--text-column", "review", "--model-repository", str(repository)]
    assert train_main([*argv, "--quiet", "--no-report"]) == 0
    metadata = _metadata(repository, "reviews")
    block = metadata["monitoring"]
    _check_histograms(block)
    assert block["features"] == []
    data = load_text_csv(path, "review", None)
    train, _ = _split(data, metadata["training"]["test_size"], 42)
    assert block["rows"] == len(train)
    assert block["class_prior"] == (np.bincount(data.y[train], minlength=2) / len(train)).tolist()
    model = keras.saving.load_model(repository / "reviews" / "1" / "model.keras")
    p = np.asarray(model(tf.constant([[str(t)] for t in data.texts[train]])))
    _check_predictions(block, metadata, p)


def test_an_image_version_records_its_reference_on_the_training_images(tmp_path: Path) -> None:
    from model_training.images import load_digits_dataset
    from model_training.pipeline import TrainingJob, split_dataset

    repository = tmp_path / "models"
    argv = ["--example", "digits", "--epochs", "3", "--model-repository", str(repository)]
    assert train_main([*argv, "--quiet", "--no-report"]) == 0
    metadata = _metadata(repository, "digits")
    block = metadata["monitoring"]
    _check_histograms(block)
    assert block["features"] == []
    parts, _, _ = split_dataset(TrainingJob(example="digits"), load_digits_dataset())
    assert block["rows"] == len(parts.y_train)
    assert (
        block["class_prior"] == (np.bincount(parts.y_train, minlength=10) / block["rows"]).tolist()
    )
    model = keras.saving.load_model(repository / "digits" / "1" / "model.keras")
    _check_predictions(block, metadata, np.asarray(model.predict(parts.x_train, verbose=0)))
