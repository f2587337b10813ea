"""The classifier for a user's table, and how it is trained (imports TensorFlow/Keras).

The 4-blob example keeps its classic recipe (``model.train``); a user's CSV gets this
one, made to be at least as accurate as a standardized logistic regression with
default flags, on tables of any scale:

- **standardization inside the model**: a ``Normalization`` layer holding the training
  rows' mean and variance of every numeric input, so ``model.keras`` and
  ``model.tflite`` take the raw encoded row. One-hot inputs pass through unchanged
  (mean 0, variance 1): they are on a unit scale already, standardizing would blow a
  rare category up to ``1 / sqrt(p (1 - p))``, and the out-of-vocabulary input, 0 on
  every training row, has variance 0 (an unseen category would come out as 1e7);
- Dense 64 (ReLU, He-uniform) -> ``logits`` -> softmax, both kernels with the L2
  penalty logistic regression has by default (scikit-learn's ``C = 1``: ``|w|^2 / 2``
  over the rows, ``1 / (2 n)`` per row of the mean loss);
- with ``hidden_units=()``, its linear special case: ``Normalization`` -> ``logits`` ->
  softmax, a softmax regression with the same penalty. It is not trained by epochs: it is
  scikit-learn's ``LogisticRegression`` (``C = 1``, lbfgs to convergence) fitted on the
  standardized rows of the whole training part, its coefficients written into the
  ``logits`` layer (``fit_linear``); a convex model needs no validation split to stop
  on, and the temperature is fitted on its cross-validated logits instead
  (``table_selection`` chooses between the two by cross-validation on the training rows);
- the network: Adam, learning rate 1e-2, batch size 32, shuffled every epoch;
- the network's **early stopping** on the validation split's NLL: training stops after
  ``patience`` epochs without a better one (``epochs`` is only an upper bound) and the
  weights of the best epoch are restored. With no validation split
  (``--validation-split 0``: no calibration either) it watches the fitted rows' NLL
  instead, which keeps creeping down long after it matters: an epoch counts as better
  only when it lowers it by ``TRAIN_LOSS_MIN_DELTA``.

The validation NLL and accuracy are computed by a callback on the model's own output
(``HeldOutScores``), not by ``fit(validation_data=...)``, whose per-epoch evaluation
costs more than a small table's whole epoch; the data is a ``tf.data`` pipeline for
the same reason (Keras rebuilds one from arrays every epoch).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from model_training.data import DataError, Split, Validation, carve_validation
from model_training.model import INPUT_NAME, LOGITS_LAYER, TrainResult, seed_everything
from model_training.table_selection import RECIPES

#: The hidden layers and the early-stopping patience of the table recipe (its epochs,
#: batch size and learning rate are the job's: ``pipeline.CSV_MAX_EPOCHS`` and so on).
HIDDEN_UNITS = RECIPES["network"]
PATIENCE = 20
#: Without a validation split, an epoch must lower the fitted rows' NLL by this much (in
#: nats per row) to count as better: a thousandth of a nat is far below what moves a
#: prediction, and far above the epoch-to-epoch jitter of Adam on a converged network.
TRAIN_LOSS_MIN_DELTA = 1e-3
#: A numeric input whose training variance is below this is constant: it is centred, not scaled.
CONSTANT_VARIANCE = 1e-12
#: How the linear special case is fitted (``fit_linear``).
LINEAR_SOLVER = "lbfgs: scikit-learn's LogisticRegression(C=1), to convergence"
#: The logit of a class absent from the training rows, below the lowest of the others:
#: ``e^-30`` of their probability, as good as never.
ABSENT_CLASS_LOGIT = 30.0


@dataclass(frozen=True)
class TableConfig:
    """Hyper-parameters of one table training run (recorded in the version's metadata)."""

    seed: int
    epochs: int
    """The most epochs to train; early stopping usually ends training well before."""
    batch_size: int
    learning_rate: float
    validation_split: float
    hidden_units: tuple[int, ...] = HIDDEN_UNITS
    """``()``: the linear special case, fitted by ``fit_linear`` rather than by epochs."""
    patience: int = PATIENCE
    verbose: int | str = "auto"

    def as_metadata(self) -> dict[str, Any]:
        """The configuration as JSON-ready data, without display-only settings."""
        data = asdict(self)
        data.pop("verbose")
        data["hidden_units"] = list(self.hidden_units)
        data.update(
            recipe="table",
            optimizer="adam",
            loss="categorical_crossentropy",
            l2="1 / (2 * train_samples) on every kernel, as LogisticRegression(C=1)",
            standardization="Normalization layer: numeric inputs by the training rows' mean "
            "and standard deviation; one-hot inputs unchanged",
        )
        if self.hidden_units:  # the linear special case has no hidden layer to describe
            data.update(hidden_activation="relu", kernel_initializer="he_uniform")
        else:  # nor epochs, batches or a learning rate: it is solved, not trained
            for key in ("epochs", "batch_size", "learning_rate", "patience"):
                data.pop(key)
            data.update(
                optimizer=LINEAR_SOLVER,
                fitted_on="all training rows (no validation split: the temperature is fitted "
                "on the cross-validated logits)",
            )
        return data


def standardization(
    x: npt.NDArray[np.float32], one_hot: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Mean and variance of each input over the rows ``x``, as the ``Normalization`` layer
    takes them: one-hot inputs (and constant ones' variance) left at 0 and 1."""
    values = np.asarray(x, dtype=np.float64)
    mean = values.mean(axis=0)
    variance = values.var(axis=0)
    variance[variance < CONSTANT_VARIANCE] = 1.0
    mean[one_hot] = 0.0
    variance[one_hot] = 1.0
    return mean, variance


def build_table_classifier(
    mean: npt.NDArray[np.float64],
    variance: npt.NDArray[np.float64],
    num_classes: int,
    hidden_units: tuple[int, ...],
    l2: float,
) -> keras.Model:
    """``Normalization`` -> Dense ReLU layers -> ``logits`` -> softmax, L2 on the kernels."""
    inputs = keras.Input(shape=(len(mean),), name=INPUT_NAME)
    x = keras.layers.Normalization(
        mean=mean.tolist(), variance=variance.tolist(), name="standardize"
    )(inputs)
    for i, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer="he_uniform",
            kernel_regularizer=keras.regularizers.L2(l2),
            name=f"hidden_{i}",
        )(x)
    logits = keras.layers.Dense(
        num_classes, kernel_regularizer=keras.regularizers.L2(l2), name=LOGITS_LAYER
    )(x)
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name="table_classifier")


def _scores(
    model: keras.Model, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]
) -> tuple[float, float]:
    """NLL and accuracy of ``model`` on ``(x, y)``, from its softmax output in float64."""
    p = np.asarray(model(x, training=False), dtype=np.float64)
    loss = float(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-300)).mean())
    return loss, float((p.argmax(axis=1) == y).mean())


class HeldOutScores(keras.callbacks.Callback):  # type: ignore[misc]
    """After every epoch: the NLL and accuracy on the fitted rows and on the validation split.

    Logged as ``loss``/``accuracy`` (the fitted rows at the end of the epoch, without the
    L2 penalty: the same quantity as the validation's) and ``val_loss``/``val_accuracy``,
    which early stopping reads.
    """

    def __init__(self, fit: Validation) -> None:
        super().__init__()
        self.parts = fit

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Overwrite the epoch's logs with the held-out scores (History records these)."""
        if logs is None:
            return
        parts = self.parts
        logs["loss"], logs["accuracy"] = _scores(self.model, parts.x_fit, parts.y_fit)
        if len(parts.y_val):
            logs["val_loss"], logs["val_accuracy"] = _scores(self.model, parts.x_val, parts.y_val)


def _batches(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], num_classes: int, config: TableConfig
) -> tf.data.Dataset:
    targets = keras.utils.to_categorical(y, num_classes)
    data = tf.data.Dataset.from_tensor_slices((x, targets))
    return data.shuffle(len(y), seed=config.seed, reshuffle_each_iteration=True).batch(
        config.batch_size
    )


def train_table(
    data: Split, num_classes: int, one_hot: npt.NDArray[np.bool_], config: TableConfig
) -> TrainResult:
    """Fit the table classifier with early stopping on the validation split; score the test.

    The validation split is the last ``config.validation_split`` of the training part
    (``carve_validation``), as for the other recipes; the standardization is fitted on
    the whole training part (validation included: no labels are used); the test
    split takes no part in anything but the final scores. Without a validation split,
    early stopping watches the fitted rows' NLL (``TRAIN_LOSS_MIN_DELTA``). The linear
    special case (no hidden units) is ``fit_linear``'s.
    """
    if not config.hidden_units:
        return fit_linear(data, num_classes, one_hot)
    parts = carve_validation(data.x_train, data.y_train, config.validation_split)
    seed_everything(config.seed)
    mean, variance = standardization(data.x_train, one_hot)
    l2 = 1.0 / (2.0 * len(parts.y_fit))
    model = build_table_classifier(mean, variance, num_classes, config.hidden_units, l2)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="categorical_crossentropy",
    )
    validated = bool(len(parts.y_val))
    # HeldOutScores first: it writes the NLLs the early stopping after it reads.
    stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss" if validated else "loss",
        mode="min",
        min_delta=0.0 if validated else TRAIN_LOSS_MIN_DELTA,
        patience=config.patience,
        restore_best_weights=True,
    )
    fitted = model.fit(
        _batches(parts.x_fit, parts.y_fit, num_classes, config),
        epochs=config.epochs,
        shuffle=False,  # the pipeline shuffles
        callbacks=[HeldOutScores(parts), stopping],
        verbose=config.verbose,
    )
    history = {key: [float(v) for v in values] for key, values in fitted.history.items()}
    test_loss, test_accuracy = _scores(model, data.x_test, data.y_test)
    return TrainResult(
        model=model,
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        test_samples=len(data.y_test),
        history=history,
        validation=parts,
        early_stopping=_early_stopping_record(stopping, history, config),
    )


def _early_stopping_record(
    stopping: keras.callbacks.EarlyStopping, history: dict[str, list[float]], config: TableConfig
) -> dict[str, Any]:
    """The metadata's ``training.early_stopping``: what was watched, and when it stopped."""
    monitor = stopping.monitor
    best = int(stopping.best_epoch)  # the epoch whose weights were restored
    epochs_run = len(history[monitor])
    record: dict[str, Any] = {
        "monitor": monitor,
        "patience": config.patience,
        "epochs_run": epochs_run,
        "best_epoch": best + 1,
        f"best_{monitor}": history[monitor][best],
        "stopped_early": epochs_run < config.epochs,
        "restored_best_weights": True,
    }
    if monitor == "loss":
        record.update(
            min_delta=TRAIN_LOSS_MIN_DELTA,
            reason="no validation split: watched the fitted rows' NLL (without the L2 "
            "penalty), so nothing held out chose the epoch, and there is no calibration",
        )
    return record


def fit_linear(data: Split, num_classes: int, one_hot: npt.NDArray[np.bool_]) -> TrainResult:
    """The linear special case, solved: ``LogisticRegression(C=1)`` on all training rows.

    The model is ``build_table_classifier`` with no hidden layer; its ``standardize``
    layer (the training rows' mean and variance) maps the rows, scikit-learn's lbfgs fits
    logistic regression with its default penalty to convergence on them (``C = 1``:
    ``|W|^2 / 2`` over the rows, the network's kernels' penalty), and the coefficients
    become the ``logits`` layer's kernel and bias, so the Keras model computes exactly that
    regression. A two-class regression has one weight vector ``w`` (the log-odds, its
    penalty ``|w|^2 / 2``): the logits are ``-w/2, w/2``.
    No row is held out: a convex fit has no epoch to choose, and the baseline it is
    measured against learns from every training row too. The history has one entry:
    the fitted rows' NLL and accuracy, and the solver's iterations (``MAX_ITER``: it did
    not converge).
    """
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    from model_training.baseline import MAX_ITER

    classes = np.unique(data.y_train)
    if len(classes) < 2:
        raise DataError(
            "expected training rows of at least two classes for the linear model, received "
            f"rows of class {int(classes[0])} only: use --architecture network"
        )
    mean, variance = standardization(data.x_train, one_hot)
    l2 = 1.0 / (2.0 * len(data.y_train))
    model = build_table_classifier(mean, variance, num_classes, (), l2)
    standardized = np.asarray(model.get_layer("standardize")(data.x_train), dtype=np.float64)
    regression = LogisticRegression(max_iter=MAX_ITER)
    with warnings.catch_warnings():  # the iterations are recorded: MAX_ITER means unconverged
        warnings.simplefilter("ignore")
        regression.fit(standardized, data.y_train)
    coef = np.asarray(regression.coef_, dtype=np.float64)
    intercept = np.asarray(regression.intercept_, dtype=np.float64)
    if len(classes) == 2:
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    kernel = np.zeros((len(mean), num_classes))
    bias = np.full(num_classes, intercept.min() - ABSENT_CLASS_LOGIT)
    kernel[:, classes] = coef.T
    bias[classes] = intercept
    model.get_layer(LOGITS_LAYER).set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    parts = Validation(data.x_train, data.y_train, data.x_train[:0], data.y_train[:0])
    loss, accuracy = _scores(model, data.x_train, data.y_train)
    test_loss, test_accuracy = _scores(model, data.x_test, data.y_test)
    return TrainResult(
        model=model,
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        test_samples=len(data.y_test),
        history={
            "loss": [loss],
            "accuracy": [accuracy],
            "lbfgs_iterations": [float(np.max(regression.n_iter_))],
        },
        validation=parts,
        early_stopping=None,
    )
