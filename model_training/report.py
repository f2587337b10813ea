"""The training report: ``report/report.md`` and its PNGs, written into the version being built.

Files (in the version's ``report/`` folder):

- ``decision_regions.png`` (2-D data only): the training samples over the regions
  each class wins, contours of the calibrated largest probability, the
  out-of-distribution boundary and the misclassified test samples;
- ``training_curves.png``: loss and accuracy per epoch, training and validation;
- ``confusion_matrix.png``: the test split;
- ``reliability.png``: reliability diagrams before and after temperature scaling,
  on the validation split (where the temperature was fitted) and the test split;
- ``sample_images.png`` and ``misclassified.png`` (image models only): training
  images of each class, and the misclassified test images with their probabilities;
- ``feature_importance.png`` (tables of at most 12 features or named columns, with a
  saved background): each one's mean |Shapley value| over the test split
  (``model_training.importance``), also a table in ``report.md``;
- ``report.md``: the metrics and the figures, readable on any Markdown viewer.

matplotlib draws with the non-interactive Agg backend (no window ever opens) and
every figure is closed once saved. Nothing here imports TensorFlow: the
decision-region grid is scored through the ``logits`` callable the caller passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: never a window, works without a display

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from model_training import calibration, ood
from model_training.importance import Importance, global_importance

DPI = 110
#: Largest-probability contours on the decision-region plot.
PROBABILITY_LEVELS = (0.5, 0.9, 0.99, 0.999)
#: The report flags a network less accurate than its baseline by more than this.
BASELINE_MARGIN = 0.02
#: A text report's table of mistakes: how many, and how much of each text.
MISTAKES_SHOWN = 10
MISTAKE_CHARACTERS = 120

Logits = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows; ``metadata`` is the version's metadata as written."""

    name: str
    metadata: dict[str, Any]
    history: dict[str, list[float]]
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    validation_logits: npt.NDArray[np.float64]
    y_val: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]
    test_logits: npt.NDArray[np.float64]
    logits: Logits | None = None
    """The model on inputs like ``x_train`` (drawn over the plane for two numeric inputs)."""
    test_texts: tuple[str, ...] = ()
    """A text model's test texts (its ``x_train``/``x_test`` are its OOD features)."""

    @property
    def class_names(self) -> list[str]:
        """The classes, in the model's output order."""
        return list(self.metadata["class_names"])

    @property
    def feature_names(self) -> list[str]:
        """The input features, in column order."""
        return list(self.metadata["feature_names"])

    @property
    def temperature(self) -> float:
        """The calibration temperature, 1 when there is none."""
        block = self.metadata.get("calibration")
        return float(block["temperature"]) if block else 1.0

    @property
    def is_image(self) -> bool:
        """True for an image model (its samples are ``(height, width, channels)`` pixels)."""
        return bool((self.metadata.get("input") or {}).get("kind") == "image")

    @property
    def is_text(self) -> bool:
        """True for a text model (it takes raw strings)."""
        return bool((self.metadata.get("input") or {}).get("kind") == "text")

    @property
    def plane(self) -> bool:
        """True when the inputs are two numbers (no one-hot block): regions can be drawn."""
        columns = (self.metadata.get("input") or {}).get("columns") or []
        categorical = any(column["kind"] == "categorical" for column in columns)
        return len(self.feature_names) == 2 and not categorical and self.logits is not None


def _colours(k: int) -> list[Any]:
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(k)]


def _save(fig: Figure, path: Path) -> None:
    try:
        fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)


def _log_axis(axis: Any) -> None:
    """A log-scale y axis labelled with plain numbers (0.01, 1, 100), not 1e-02 or 10^0.

    When it spans less than two decades, the minor ticks at 2 and 5 are labelled too.
    """
    axis.set_yscale("log")

    def minor(value: float, _: int) -> str:
        low, high = axis.get_ylim()
        mantissa = round(value / 10 ** math.floor(math.log10(value)))
        return f"{value:g}" if high / low < 100 and mantissa in (2, 5) else ""

    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.yaxis.set_minor_formatter(FuncFormatter(minor))


def _grid(x: np.ndarray, steps: int = 300) -> tuple[np.ndarray, np.ndarray]:
    low, high = x.min(axis=0).astype(np.float64), x.max(axis=0).astype(np.float64)
    pad = (high - low) * 0.2 + 1e-3 * (np.abs(high) + 1.0)
    return np.meshgrid(
        np.linspace(low[0] - pad[0], high[0] + pad[0], steps),
        np.linspace(low[1] - pad[1], high[1] + pad[1], steps),
    )


def decision_regions(data: ReportData, path: Path) -> None:
    """Regions, calibrated max-probability contours, OOD boundary, data (2-D inputs only)."""
    names, features = data.class_names, data.feature_names
    colours = _colours(len(names))
    xx, yy = _grid(np.concatenate([data.x_train, data.x_test]))
    points = np.column_stack([xx.ravel(), yy.ravel()])
    assert data.logits is not None  # data.plane
    probabilities = calibration.softmax(data.logits(points), data.temperature)
    winner = probabilities.argmax(axis=1).reshape(xx.shape)
    top = probabilities.max(axis=1).reshape(xx.shape)

    fig, ax = plt.subplots(figsize=(8.5, 7))
    extent = (xx.min(), xx.max(), yy.min(), yy.max())
    ax.imshow(
        winner,
        origin="lower",
        extent=extent,
        cmap=ListedColormap(colours),
        vmin=-0.5,
        vmax=len(names) - 0.5,
        alpha=0.22,
        aspect="auto",
        interpolation="nearest",
    )
    levels = [v for v in PROBABILITY_LEVELS if top.min() < v < top.max()]
    if levels:
        contours = ax.contour(xx, yy, top, levels=levels, colors="0.25", linewidths=0.8)
        ax.clabel(contours, fmt=lambda v: f"{v:g}", fontsize=8)
    handles: list[Any] = [
        Line2D(
            [],
            [],
            color="0.25",
            linewidth=0.8,
            label=f"largest probability: {', '.join(f'{v:g}' for v in levels) or 'flat'}",
        )
    ]
    detector = data.metadata.get("training_data", {}).get("ood")
    if detector:
        distance = ood.distance_from_metadata(points, detector).reshape(xx.shape)
        ax.contour(
            xx,
            yy,
            distance,
            levels=[detector["threshold"]],
            colors="crimson",
            linewidths=1.6,
            linestyles="--",
        )
        handles.append(
            Line2D(
                [],
                [],
                color="crimson",
                linestyle="--",
                label=f"OOD boundary (distance {detector['threshold']:.2f}): outside is flagged",
            )
        )
    for k, (name, colour) in enumerate(zip(names, colours, strict=True)):
        members = data.x_train[data.y_train == k]
        ax.scatter(
            members[:, 0],
            members[:, 1],
            s=12,
            color=colour,
            edgecolors="black",
            linewidths=0.3,
            label=f"class {name} (training sample)",
        )
    predicted = data.test_logits.argmax(axis=1)
    wrong = data.x_test[predicted != data.y_test]
    ax.scatter(wrong[:, 0], wrong[:, 1], s=70, marker="x", color="black", linewidths=1.8)
    handles.append(
        Line2D(
            [],
            [],
            marker="x",
            color="black",
            linestyle="",
            markersize=8,
            label=f"misclassified test sample ({len(wrong)} of {len(data.y_test)})",
        )
    )
    class_handles, _ = ax.get_legend_handles_labels()
    ax.legend(
        handles=[*class_handles, *handles],
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=9,
    )
    span = np.ptp(points, axis=0)
    if max(span) / max(min(span), 1e-12) < 4:
        ax.set_aspect("equal")
    ax.set_xlabel(features[0])
    ax.set_ylabel(features[1])
    calibrated = (
        f"calibrated largest probability (T = {data.temperature:.3g})"
        if data.metadata.get("calibration")
        else "largest probability (no calibration)"
    )
    ax.set_title(f"{data.name}: decision regions and {calibrated}", fontsize=11)
    _save(fig, path)


def training_curves(data: ReportData, path: Path) -> None:
    """Loss (log scale) and accuracy per epoch, training and validation, and the final test."""
    history = data.history
    epochs = np.arange(1, len(history["loss"]) + 1)
    metrics = data.metadata["metrics"]
    early = data.metadata["training"].get("early_stopping")
    # Early stopping restores the best epoch's weights: the model is that epoch's.
    final = early["best_epoch"] if early else epochs[-1]
    when = f"best epoch {final}, weights restored" if early else "after training"
    marker = "o" if len(epochs) <= 40 else None
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4.3))
    panels = ((loss_ax, "loss", "Loss (cross-entropy)"), (acc_ax, "accuracy", "Accuracy"))
    for ax, key, title in panels:
        ax.plot(epochs, history[key], marker=marker, markersize=3, label="training")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker=marker, markersize=3, label="validation")
        ax.plot(
            [final],
            [metrics[f"test_{key}"]],
            marker="*",
            markersize=12,
            linestyle="",
            color="black",
            label=f"test, {when} ({metrics[f'test_{key}']:.4g})",
        )
        if early:
            ax.axvline(final, color="0.5", linestyle=":", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    _log_axis(loss_ax)
    acc_ax.set_ylim(top=1.005)
    fig.suptitle(f"{data.name}: training curves", fontsize=12)
    fig.tight_layout()
    _save(fig, path)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> npt.NDArray[np.int64]:
    """``matrix[i, j]``: how many samples of true class ``i`` were predicted as ``j``."""
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).astype(np.int64)


def confusion_matrix(data: ReportData, path: Path) -> None:
    """Counts of true against predicted classes on the test split."""
    names = data.class_names
    k = len(names)
    matrix = confusion(data.y_test, data.test_logits.argmax(axis=1), k)
    size = min(max(4.8, 0.55 * k + 2.5), 20)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="test samples")
    if k <= 30:
        for (i, j), count in np.ndenumerate(matrix):
            dark = count > matrix.max() / 2
            ax.text(j, i, str(count), ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 3 else 0, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(
        f"{data.name}: confusion matrix, test split\n"
        f"{np.trace(matrix)} of {matrix.sum()} right (accuracy {accuracy:.4f})",
        fontsize=11,
    )
    _save(fig, path)


#: Training images shown per class, misclassified test images shown at most.
SAMPLES_PER_CLASS = 8
MISCLASSIFIED_SHOWN = 24
#: Classes shown in the sample grid at most (one row each).
CLASSES_SHOWN = 20


def _show_image(ax: Any, image: np.ndarray) -> None:
    """One image of 0..255 pixels, gray or colour, without axes."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(np.clip(image[..., :3] / 255.0, 0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def sample_images(data: ReportData, path: Path) -> None:
    """A row of training images per class, as the model sees them (before its rescaling)."""
    names = data.class_names[:CLASSES_SHOWN]
    fig, axes = plt.subplots(
        len(names),
        SAMPLES_PER_CLASS,
        figsize=(1.1 * SAMPLES_PER_CLASS + 1, 1.1 * len(names) + 0.6),
        squeeze=False,
    )
    for k, name in enumerate(names):
        members = data.x_train[data.y_train == k][:SAMPLES_PER_CLASS]
        for j in range(SAMPLES_PER_CLASS):
            ax = axes[k, j]
            if j < len(members):
                _show_image(ax, members[j])
            else:
                ax.axis("off")
        axes[k, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    shape = "x".join(str(d) for d in data.x_train.shape[1:])
    more = (
        f" (first {CLASSES_SHOWN} of {len(data.class_names)} classes)"
        if len(data.class_names) > CLASSES_SHOWN
        else ""
    )
    fig.suptitle(f"{data.name}: training images per class, {shape}{more}", fontsize=11)
    fig.tight_layout()
    _save(fig, path)


def misclassified(data: ReportData, path: Path) -> None:
    """The misclassified test images, each with its true class and calibrated probabilities."""
    names = data.class_names
    probabilities = calibration.softmax(data.test_logits, data.temperature)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != data.y_test)
    # The most confident mistakes first: they are the ones to look at.
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]
    shown = wrong[:MISCLASSIFIED_SHOWN]
    columns = 6
    rows = max(1, math.ceil(len(shown) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), shown, strict=False):
        ax.axis("on")
        _show_image(ax, data.x_test[i])
        true, guess = int(data.y_test[i]), int(predicted[i])
        ax.set_title(
            f"true {names[true]}: {probabilities[i, true]:.2f}\n"
            f"predicted {names[guess]}: {probabilities[i, guess]:.2f}",
            fontsize=8,
        )
    if not len(shown):
        axes[0, 0].text(0, 0.5, "no misclassified test images", fontsize=11)
    fig.suptitle(
        f"{data.name}: misclassified test images, {len(wrong)} of {len(data.y_test)} "
        f"(calibrated probabilities{', most confident first' if len(wrong) > 1 else ''})",
        fontsize=11,
    )
    fig.tight_layout()
    _save(fig, path)


def _reliability_panel(
    top: Any, bottom: Any, logits: np.ndarray, labels: np.ndarray, temperature: float | None
) -> None:
    curves = [("uncalibrated", 1.0, "tab:orange", "s")]
    if temperature is not None:
        curves.append((f"temperature-scaled, T = {temperature:.3g}", temperature, "tab:blue", "o"))
    width = 1.0 / calibration.ECE_BINS
    top.plot([0, 1], [0, 1], color="0.5", linestyle=":", label="perfectly calibrated")
    for i, (label, t, colour, marker) in enumerate(curves):
        bins = calibration.reliability(calibration.softmax(logits, t), labels)
        used = bins.count > 0
        top.plot(
            bins.confidence[used],
            bins.accuracy[used],
            marker=marker,
            color=colour,
            clip_on=False,  # a point at confidence 1 sits on the edge
            label=f"{label} (ECE {bins.ece:.4f})",
        )
        centres = bins.edges[:-1] + width / 2
        offset = (i - (len(curves) - 1) / 2) * width * 0.4
        bottom.bar(centres + offset, bins.count, width=width * 0.4, color=colour, label=label)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    top.set_ylabel("accuracy in the bin")
    top.grid(alpha=0.3)
    # Below the counts, not over the diagram: no corner of it is always free of points.
    handles, labels = top.get_legend_handles_labels()
    bottom.legend(
        handles, labels, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.32), frameon=False
    )
    _log_axis(bottom)
    bottom.set_ylim(bottom=0.7)  # a bin with a single sample still shows a bar
    bottom.set_xlim(0, 1)
    bottom.set_xlabel(f"confidence (largest probability), {calibration.ECE_BINS} bins")
    bottom.set_ylabel("samples (log)")
    bottom.grid(alpha=0.3)


def reliability_diagram(data: ReportData, path: Path) -> None:
    """Accuracy against confidence per bin, before and after calibration, with sample counts."""
    temperature = data.temperature if data.metadata.get("calibration") else None
    panels = [("test split (held out)", data.test_logits, data.y_test)]
    if len(data.y_val):
        block = data.metadata.get("calibration") or {}
        title = _held_out_name(block, short=True)
        title = f"{title} (T fitted here)" if temperature else title
        panels.insert(0, (title, data.validation_logits, data.y_val))
    fig, axes = plt.subplots(
        2,
        len(panels),
        figsize=(5.6 * len(panels), 7),
        squeeze=False,
        sharex="col",
        gridspec_kw={"height_ratios": [3, 1.2]},
    )
    for column, (title, logits, labels) in enumerate(panels):
        _reliability_panel(axes[0, column], axes[1, column], logits, labels, temperature)
        axes[0, column].set_title(f"{title}: {len(labels)} samples", fontsize=10)
    fig.suptitle(f"{data.name}: reliability diagram", fontsize=12)
    fig.tight_layout()
    _save(fig, path)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _held_out_name(block: dict[str, Any], short: bool = False) -> str:
    """What the temperature was fitted on: the validation split, or (the linear model,
    which holds none out) the training rows' out-of-fold logits."""
    if block.get("fitted_on") != "out_of_fold":
        return "validation split"
    if short:
        return "training rows, out of fold"
    return (
        "training rows' out-of-fold logits (each scored by the model fitted on the other "
        "folds: the linear model holds no validation split out)"
    )


def _calibration_decision(block: dict[str, Any]) -> list[str]:
    """Whether the fitted temperature is served, and why (older blocks have no decision)."""
    if "kept" not in block:
        return []
    cv = block.get("cross_validation")
    lines = [
        "",
        f"**Decision:** the fitted temperature ({block['fitted_temperature']:.4g}) is "
        + ("**kept**" if block["kept"] else "**not kept**: the service serves T = 1")
        + f", because {block['reason']}.",
    ]
    if cv and not block["at_bound"]:
        lines += [
            "",
            f"Cross-validated on the {_held_out_name(block, short=True)} ({cv['folds']} "
            "folds: each fold's "
            "temperature fitted on the other folds, scored on that fold only), held-out NLL "
            f"{_fmt(cv['nll_before'])} without and {_fmt(cv['nll_after'])} with temperature "
            f"scaling (standard error of the difference {cv['standard_error']:.2g}); it is "
            f"kept only if that lowers the NLL by {cv['min_gain']:.0%} and by more than "
            f"{cv['standard_errors']:g} standard errors. "
            "A temperature always lowers the NLL of the samples it was fitted on, so only "
            "samples it was not fitted on can show whether it helps.",
        ]
    return lines


def _calibration_section(block: dict[str, Any] | None) -> list[str]:
    if not block:
        return [
            "No calibration: training ran without a validation split (`--validation-split 0`), "
            "so the service serves the model's own probabilities (temperature 1).",
        ]
    t = block["temperature"]
    if t == 1.0 and not block.get("kept", True):
        sense = "1: the model's own probabilities are served"
    elif t < 1:
        sense = "below 1: the model was under-confident, and calibrated probabilities are sharper"
    else:
        sense = "above 1: the model was over-confident, and calibrated probabilities are softer"
    lines = [
        f"Temperature scaling: the service divides the logits by **T = {t:.4g}** before the "
        f'softmax (unless a request says `"calibrated": false`). T is {sense}. A temperature '
        f"is fitted to minimise the negative log-likelihood (NLL) of the {_held_out_name(block)}; "
        "the test split never takes part. The argmax, hence the accuracy, is the same "
        "either way.",
        *_calibration_decision(block),
        "",
        f"With the temperature served (T = {t:.4g}):",
        "",
        "| split | samples | NLL before | NLL after | ECE before | ECE after |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    out_of_fold = block.get("fitted_on") == "out_of_fold"
    fitted = f"{_held_out_name(block, short=True) if out_of_fold else 'validation'} (T fitted here)"
    for key, label in (("validation", fitted), ("test", "test (held out)")):
        s = block[key]
        lines.append(
            f"| {label} | {s['samples']} | {_fmt(s['nll_before'])} | {_fmt(s['nll_after'])} "
            f"| {_fmt(s['ece_before'])} | {_fmt(s['ece_after'])} |"
        )
    lines += [
        "",
        f"ECE (expected calibration error): the samples are put in {block['ece_bins']} "
        "equal-width bins by confidence (largest probability); ECE is the sample-weighted "
        "mean of |accuracy - mean confidence| over the bins. 0 is perfect.",
    ]
    if block.get("at_bound") and block.get("kept", True):
        lines += [
            "",
            f"**Warning:** the fit stopped at the edge of its search interval "
            f"{block['bounds']}: the validation NLL would keep falling beyond it. This "
            "happens when every validation sample is classified correctly, so "
            "sharpening never costs anything on it; treat this temperature with care.",
        ]
    return lines


def per_class(
    y_true: np.ndarray, y_pred: np.ndarray, k: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Precision and recall of each class (``nan`` where undefined) and its test count."""
    matrix = confusion(y_true, y_pred, k).astype(np.float64)
    right = np.diag(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = right / matrix.sum(axis=0)
        recall = right / matrix.sum(axis=1)
    return precision, recall, matrix.sum(axis=1).astype(np.int64)


def _ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _per_class_section(data: ReportData) -> list[str]:
    names = data.class_names
    precision, recall, support = per_class(data.y_test, data.test_logits.argmax(axis=1), len(names))
    lines = [
        "On the test split: precision is the share of the samples predicted as the class "
        "that are of it; recall the share of the class's samples predicted as it (n/a: no "
        "sample predicted as, or of, that class).",
        "",
        "| class | test samples | precision | recall |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {support[k]} | {_ratio(precision[k])} | {_ratio(recall[k])} |"
        for k, name in enumerate(names)
    ]
    return lines


def _feature_ood_section(
    training_data: dict[str, Any], test_flagged: float, what: str
) -> list[str]:
    """The OOD signal measured on the features entering the logits: of an ``image``, a
    ``text`` (their leading components) or a ``sample`` (a table's)."""
    detector = training_data["ood"]
    described = detector["features"]
    dim = described["dim"]
    space = {
        "image": f"the {dim} values entering its `logits` layer (distances between raw "
        "pixels mean little)",
        "text": f"the {dim} leading components (a truncated SVD fitted on the training "
        f"texts) of the {described.get('of', 'many')} TF-IDF weights entering its `logits` "
        "layer (too many, and too sparse, for a covariance of their own)",
        "sample": f"the {dim} values entering its `logits` layer (one-hot inputs of "
        "categorical columns make distances between raw rows meaningless)",
    }[what]
    reference = "training" if detector.get("fitted_on") == "train" else "training + validation"
    lines = [
        f"Each prediction comes with the distance of the {what} to the training {what}s, "
        f"measured on the model's own features: {space}. Above "
        f"**{detector['threshold']:.4g}** the {what} is flagged as out of distribution "
        "(OOD). `model.tflite` outputs these features after the logits, so the service "
        "computes the distance from the same inference.",
        "",
        "distance(f) = min over classes k of sqrt((f - m_k)^T P (f - m_k)): the Mahalanobis "
        "distance of the features f to the nearest class mean m_k, with P the inverse of the "
        f"pooled within-class covariance of the training {what}s' features (Lee et al., 2018). "
        f"The threshold is the {detector['quantile'] * 100:g}th percentile of the training "
        f"{what}s' own distances. The model was fitted on those very {what}s, so a new "
        f"{what} of the same kind lies a little further out: the held-out test {what}s show "
        f"how many real {what}s are flagged.",
        "",
        "| | value |",
        "|---|---:|",
        f"| reference {what}s ({reference}) | {training_data['n']} |",
        f"| threshold | {detector['threshold']:.4g} |",
        f"| training {what}s flagged | {detector['train_flagged']:.2%} |",
        f"| test {what}s flagged (held out, real) | {test_flagged:.2%} |",
    ]
    if "noise" in detector:
        noise = detector["noise"]
        lines.append(
            f"| {noise['what']} flagged ({noise['samples']}) | {detector['noise_flagged']:.2%} |"
        )
    return lines


def _ood_section(data: ReportData) -> list[str]:
    training_data = data.metadata["training_data"]
    detector = training_data["ood"]
    if detector is None:
        return [
            "No out-of-distribution signal: the table has no numeric column to measure a "
            "distance on (an unseen category is reported back as `unseen`)."
        ]
    test_flagged = (
        float(detector["test_flagged"])
        if "test_flagged" in detector
        else float(ood.flagged(data.x_test, detector).mean())
    )
    if detector.get("space") == "features":
        what = "image" if data.is_image else "text" if data.is_text else "sample"
        return _feature_ood_section(training_data, test_flagged, what)
    numeric_only = (
        [
            "",
            "The table has categorical columns: the distance is measured over its "
            f"{len(detector['measured_on'])} numeric inputs only (the one-hot inputs have zero "
            "precision). One-hot inputs make the covariance degenerate and a rare category "
            "look far away; a category never seen in training is reported back as `unseen`.",
        ]
        if "measured_on" in detector
        else []
    )
    return [
        "Each prediction comes with the distance of the input to the training data; above "
        f"**{detector['threshold']:.4g}** the input is flagged as out of distribution (OOD).",
        "",
        "distance(x) = min over classes k of sqrt((x - m_k)^T P (x - m_k)): the Mahalanobis "
        "distance to the nearest class mean m_k, with P the inverse of the pooled "
        "within-class covariance of the training features (plus a ridge of "
        f"{detector['ridge']:.3g}). It counts standard deviations to the nearest class along "
        "the data's own directions of spread. The threshold is the "
        f"{detector['quantile'] * 100:g}th percentile of the training samples' own distances, "
        "so about that share of inputs like the training data pass unflagged.",
        "",
        "| | value |",
        "|---|---:|",
        f"| reference samples (training + validation) | {training_data['n']} |",
        f"| threshold | {detector['threshold']:.4g} |",
        f"| training samples flagged | {detector['train_flagged']:.2%} |",
        f"| test samples flagged (held out) | {test_flagged:.2%} |",
        *numeric_only,
    ]


def _columns_note(meta: dict[str, Any]) -> str:
    """`` (3 numeric columns, 1 categorical: island)`` for a table that records its columns."""
    columns = (meta.get("input") or {}).get("columns")
    if not columns:
        return ""
    numeric = sum(column["kind"] == "numeric" for column in columns)
    categorical = [column["name"] for column in columns if column["kind"] == "categorical"]
    note = f"{numeric} numeric column{'s' if numeric != 1 else ''}"
    if categorical:
        note += f", {len(categorical)} categorical: {', '.join(categorical)}"
    missing = (meta.get("training") or {}).get("data", {}).get("missing_values") or {}
    if missing:
        note += f"; {sum(missing.values())} missing values, filled as the columns record"
    return f" ({note})"


def _epochs_note(training: dict[str, Any]) -> str:
    """How the weights were fitted: epochs (and how early stopping ended them), batch size
    and learning rate, or the linear model's solver."""
    if "solver_iterations" in training:  # a text model: its logits layer solved
        return (
            f"The logits layer was solved by {training['optimizer']} "
            f"({training['solver_iterations']} iterations)"
        )
    if "epochs" not in training:  # the linear model: solved, not trained by epochs
        iterations = (training.get("history") or {}).get("lbfgs_iterations") or [0]
        return (
            f"The linear model was solved by {training['optimizer']} ({iterations[-1]:.0f} "
            "iterations)"
        )
    early = training.get("early_stopping")
    if not early:
        epochs = f"{training['epochs']} epochs"
    else:
        if early.get("monitor") != "loss":
            watched = "the validation loss"
        else:
            watched = "the training loss (no validation split)"
        epochs = (
            f"{early['epochs_run']} epochs (at most {training['epochs']}; early stopping on "
            f"{watched}, weights of the best epoch, {early['best_epoch']}, restored)"
        )
    return (
        f"{epochs}, batch size {training['batch_size']}, learning rate "
        f"{training['learning_rate']:g}"
    )


def _baseline_rows(metrics: dict[str, Any]) -> list[str]:
    baseline = metrics.get("baseline")
    if not baseline:
        return []
    correct = round(baseline["test_accuracy"] * baseline["test_samples"])
    name = baseline.get("name", "standardized logistic regression")
    rows = [
        f"| baseline test accuracy: {name} | "
        f"{baseline['test_accuracy']:.4f} ({correct} of {baseline['test_samples']}) |"
    ]
    if "test_loss" in baseline:  # recorded since the table recipes are chosen between
        rows.append(f"| baseline test loss (cross-entropy) | {_fmt(baseline['test_loss'])} |")
    return rows


#: How the report names each table recipe.
RECIPE_NAMES = {
    "network": "network (a hidden layer of 64)",
    "linear": "linear (no hidden layer: a softmax regression)",
}


def _selection_section(training: dict[str, Any]) -> list[str]:
    """Which table recipe was trained and, when it was chosen, the scores that chose it."""
    selection = training.get("model_selection")
    if not selection:
        return []
    chosen = selection["chosen"]
    scores = selection.get("scores")
    if not scores:
        return [
            "## Model selection",
            "",
            f"The model is the **{RECIPE_NAMES[chosen]}** ({selection['method']}): no "
            "cross-validation was run"
            + (
                " to choose (the linear model's folds only fit its temperature)."
                if chosen == "linear"
                else "."
            ),
            "",
        ]
    accuracy = selection.get("accuracy") or {}
    rows = []
    for name, label in RECIPE_NAMES.items():
        mark = "**" if name == chosen else ""
        chose = " (chosen)" if name == chosen else ""
        rows.append(
            f"| {mark}{label}{chose}{mark} | {mark}{scores[name]:.4f}{mark} | "
            f"{accuracy.get(name, float('nan')):.4f} |"
        )
    return [
        "## Model selection",
        "",
        f"The trainer chose the **{RECIPE_NAMES[chosen]}** by {selection['folds']}-fold "
        "stratified cross-validation on the training rows (the test rows untouched): each "
        "model was fitted on every fold's complement as the final model is, and scored on "
        "the fold. The network is chosen only when its out-of-fold NLL is lower by more than "
        "one standard error of the per-row difference (here "
        f"{selection.get('standard_error') or 0:.4f}), else the linear model, the simpler "
        "one (the one-standard-error rule); the chosen one is then fitted on the training "
        f"rows. Cross-validation took {selection['seconds']:.1f} s.",
        "",
        "| model | cross-validated NLL | cross-validated accuracy |",
        "|---|---:|---:|",
        *rows,
        "",
        "`--architecture network` or `--architecture linear` trains one of them without choosing.",
        "",
    ]


def _baseline_section(metrics: dict[str, Any], training: dict[str, Any]) -> list[str]:
    baseline = metrics.get("baseline")
    if not baseline:
        return []
    model = "linear model" if training.get("architecture") == "linear" else "network"
    gap = metrics["test_accuracy"] - baseline["test_accuracy"]
    if gap == 0:
        verdict = f"The {model} is exactly as accurate on the test split."
    elif gap > 0:
        verdict = f"The {model} is {gap:.4f} more accurate on the test split."
    else:
        verdict = (
            f"**The {model} is {-gap:.4f} less accurate than the baseline on the test split**"
            + (
                ": on this data the one-liner serves users better."
                if -gap > BASELINE_MARGIN
                else f", within {BASELINE_MARGIN} (on a small test split, one sample can be "
                "that much)."
            )
        )
    losses = (
        f" Test loss (cross-entropy) {_fmt(baseline['test_loss'])} against the {model}'s "
        f"{_fmt(metrics['test_loss'])}."
        if "test_loss" in baseline
        else ""
    )
    learnt = "" if baseline.get("fitted_on") == "train" else " (those it was fitted on and the "
    learnt = learnt and learnt + "validation split)"
    return [
        "## Baseline",
        "",
        f"A {baseline.get('name', 'standardized logistic regression')} "
        f"(`{baseline['method']}`), fitted on the same "
        f"{baseline['train_samples']} training rows the {model} could learn from{learnt} and "
        "scored on the same "
        f"{baseline['test_samples']} test rows: accuracy {baseline['test_accuracy']:.4f} "
        f"against the {model}'s {metrics['test_accuracy']:.4f}. {verdict}{losses}",
        "",
    ]


def importance(data: ReportData) -> Importance | None:
    """A table's global feature importance (``model_training.importance``): None for
    images, text, or a table without a saved background or of more than 12 players."""
    if data.is_image or data.is_text or data.logits is None:
        return None
    logits, temperature = data.logits, data.temperature

    def probabilities(z: np.ndarray) -> np.ndarray:
        return calibration.softmax(logits(z), temperature)

    return global_importance(data.metadata, probabilities, data.x_test)


def importance_chart(found: Importance, path: Path) -> None:
    """Horizontal bars: each player's mean |attribution|, the largest on top."""
    order = np.argsort(found.mean_abs, kind="stable")
    fig, ax = plt.subplots(figsize=(6.4, max(3.0, 0.45 * len(order) + 1.2)))
    ax.barh([found.players[i] for i in order], found.mean_abs[order], color="#4C72B0")
    ax.set_xlabel("mean |Shapley value| of the predicted class's probability")
    ax.set_title(f"Global feature importance ({found.rows} test rows)")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def _importance_section(found: Importance) -> list[str]:
    order = np.argsort(-found.mean_abs, kind="stable")
    rows = (
        f"all {found.test_rows} test rows"
        if found.rows == found.test_rows
        else f"the first {found.rows} of the {found.test_rows} test rows"
    )
    return [
        "## Global feature importance",
        "",
        "![Global feature importance](feature_importance.png)",
        "",
        f"Each feature's exact Shapley value for the calibrated probability of the class "
        f"the model picks, against the version's saved background ({found.points} weighted "
        f"points), as `/models/{{name}}/explain` answers it; its mean absolute value over "
        f"{rows}.",
        "",
        "| feature | mean \\|attribution\\| |",
        "|---|---:|",
        *[f"| {_cell(found.players[i], 60)} | {found.mean_abs[i]:.4g} |" for i in order],
        "",
    ]


def markdown(data: ReportData, files: Sequence[str], found: Importance | None = None) -> str:
    """The text of ``report.md``; ``files`` are the figures written next to it, ``found``
    the table's global feature importance."""
    meta = data.metadata
    metrics, training = meta["metrics"], meta["training"]
    source = training["data"]
    if source.get("kind") == "blobs":
        where = (
            f"{len(source['centers'])} Gaussian blobs, {source['n_samples']} samples, "
            f"seed {source['seed']}"
        )
    elif source.get("kind") == "digits":
        where = (
            f"scikit-learn's {source['n_samples']} handwritten digits (8x8, pixel values 0..255, "
            "white ink on black)"
        )
    elif source.get("kind") in ("text_csv", "text_folder"):
        column = f", column `{source['text_column']}`" if "text_column" in source else ""
        where = f"`{source.get('path')}`{column}"
    elif source.get("kind") == "image_folder":
        height, width = source["image_size"]
        where = (
            f"`{source.get('path')}` ({source['images']} images, {height}x{width}, "
            f"{source['channels']} channel{'s' if source['channels'] > 1 else ''})"
        )
    else:
        where = f"`{source.get('path')}`{_columns_note(meta)}"
    correct = round(metrics["test_accuracy"] * metrics["test_samples"])
    held = (
        " (the temperature fitted on their out-of-fold logits)"
        if data.is_text
        else f", {training['validation_samples']} for validation"
    )
    lines = [
        f"# Training report: {data.name}",
        "",
        f"Created {meta['created_at']} from {where}: {training['train_samples']} samples to "
        f"fit the weights{held}, {metrics['test_samples']} held out for testing. "
        f"{_epochs_note(training)}, seed {training['seed']}.",
        "",
        "## Metrics",
        "",
        "| | value |",
        "|---|---:|",
        f"| test accuracy | {metrics['test_accuracy']:.4f} ({correct} of "
        f"{metrics['test_samples']}) |",
        *_baseline_rows(metrics),
        f"| test loss (cross-entropy, uncalibrated) | {_fmt(metrics['test_loss'])} |",
    ]
    block = meta.get("calibration")
    if block:
        refused = (
            ""
            if block.get("kept", True)
            else f" (fitted {block['fitted_temperature']:.4g}, not kept)"
        )
        lines += [
            f"| calibration temperature T | {block['temperature']:.4g}{refused} |",
            f"| test NLL, calibrated | {_fmt(block['test']['nll_after'])} |",
            f"| test ECE, uncalibrated -> calibrated | {_fmt(block['test']['ece_before'])} -> "
            f"{_fmt(block['test']['ece_after'])} |",
        ]
    detector = meta["training_data"]["ood"]
    lines += [
        f"| OOD threshold (distance) | {detector['threshold']:.4g} |" if detector else "",
        "",
        *_baseline_section(metrics, training),
        *_selection_section(training),
        "## Per class",
        "",
        *_per_class_section(data),
        "",
        "## Calibration",
        "",
        *_calibration_section(block),
        "",
        "## Out-of-distribution signal",
        "",
        *_ood_section(data),
        "",
        *(_importance_section(found) if found is not None else []),
        "## Figures",
        "",
    ]
    if "decision_regions.png" in files:
        lines += [
            "### Decision regions",
            "",
            "![Decision regions](decision_regions.png)",
            "",
            "Background colour: the class the model picks at each point. Grey contours: "
            "the calibrated probability of that class (what the service answers by default). "
            "Dots: training samples, coloured by their true class; crosses: misclassified "
            "test samples. Outside the dashed red line the service flags inputs as out of "
            "distribution: the model still picks a class there, with a confidence that "
            "means nothing.",
            "",
        ]
    elif not data.is_image and not data.is_text:
        lines += [
            "### Decision regions",
            "",
            f"Not drawn: the model has {len(data.feature_names)} inputs and the plot needs "
            "exactly 2 numeric ones.",
            "",
        ]
    if "sample_images.png" in files:
        lines += [
            "### Training images",
            "",
            "![Training images per class](sample_images.png)",
            "",
            "A row of training images per class, as the model takes them (pixel values "
            "0..255; the network rescales them itself).",
            "",
        ]
    if "training_curves.png" in files:
        lines += [
            "### Training curves",
            "",
            "![Training curves](training_curves.png)",
            "",
            "Loss (log scale) and accuracy after each epoch, on the samples the weights are "
            "fitted on and on the validation split; the star is the held-out test split with "
            "the weights served (after the last epoch, or with early stopping those of the "
            "best epoch, dotted line). Training and validation curves far apart would mean "
            "over-fitting.",
            "",
        ]
    lines += [
        "### Confusion matrix",
        "",
        "![Confusion matrix](confusion_matrix.png)",
        "",
        "Rows: true class; columns: predicted class; test split. Everything off the "
        "diagonal is a mistake.",
        "",
    ]
    if "misclassified.png" in files:
        lines += [
            "### Misclassified test images",
            "",
            "![Misclassified test images](misclassified.png)",
            "",
            "Each misclassified test image with the calibrated probability of its true "
            "class and of the class the model picked, most confident mistakes first.",
            "",
        ]
    if data.test_texts:
        lines += _misclassified_texts(data)
    lines += [
        "### Reliability diagram",
        "",
        "![Reliability diagram](reliability.png)",
        "",
        "Top: for the samples in each confidence bin, the share that was classified right, "
        "against their mean confidence; honest probabilities lie on the dotted diagonal "
        "(below it: over-confident; above it: under-confident). Bottom: how many samples "
        "fall in each bin (log scale); on well-separated data nearly all sit in the top bin.",
        "",
    ]
    return "\n".join(lines)


def _cell(text: str, width: int = MISTAKE_CHARACTERS) -> str:
    """``text`` on one line of a Markdown table, cut to ``width`` characters."""
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _misclassified_texts(data: ReportData) -> list[str]:
    """The test texts the model got wrong, most confident first, as a table."""
    probabilities = calibration.softmax(data.test_logits, data.temperature)
    picked = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(picked != data.y_test)
    wrong = wrong[np.argsort(-probabilities[wrong, picked[wrong]], kind="stable")]
    names = data.class_names
    lines = [
        "### Misclassified test texts",
        "",
        f"{len(wrong)} of {len(data.y_test)} test texts are misclassified"
        + (
            f"; the {min(len(wrong), MISTAKES_SHOWN)} the model was most sure of, with the "
            "calibrated probability of the class it picked and of the true class:"
            if len(wrong)
            else "."
        ),
        "",
    ]
    if len(wrong):
        lines += ["| text | picked | true |", "|---|---|---|"]
        lines += [
            f"| {_cell(data.test_texts[i])} | {_cell(names[picked[i]], 40)} "
            f"{probabilities[i, picked[i]]:.3f} | {_cell(names[data.y_test[i]], 40)} "
            f"{probabilities[i, data.y_test[i]]:.3f} |"
            for i in wrong[:MISTAKES_SHOWN]
        ]
        lines.append("")
    return lines


def write_report(directory: Path, data: ReportData) -> list[str]:
    """Write ``report.md`` and its PNGs into ``directory`` (created); returns the file names."""
    directory.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, Callable[[ReportData, Path], None]]] = []
    if data.plane:
        figures.append(("decision_regions.png", decision_regions))
    if data.is_image:
        figures.append(("sample_images.png", sample_images))
    if data.history:
        figures.append(("training_curves.png", training_curves))
    figures += [
        ("confusion_matrix.png", confusion_matrix),
        ("reliability.png", reliability_diagram),
    ]
    if data.is_image:
        figures.append(("misclassified.png", misclassified))
    written = []
    for filename, draw in figures:
        draw(data, directory / filename)
        written.append(filename)
    found = importance(data)
    if found is not None:
        importance_chart(found, directory / "feature_importance.png")
        written.append("feature_importance.png")
    (directory / "report.md").write_text(markdown(data, written, found), encoding="utf-8")
    return [*written, "report.md"]
