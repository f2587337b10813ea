"""A table's two recipes, and which one to train: by cross-validation on the training rows.

The table recipe (``table_model``) has a linear special case: the same standardization
and penalty with no hidden layer, a softmax regression with logistic regression's
penalty, solved to convergence on all the rows it may learn from (``fit_linear``: its
penalty, not an epoch, regularizes it). On most tables the network is as good or better;
on some small ones a straight line wins (HELPrct, 453 rows, 3 classes, seed 42: test
accuracy 0.670 and log loss 0.746 for the network, 0.747 and 0.650 for the line, 0.736
and 0.653 for a logistic regression). Which one a table needs is decided on the rows a
trainer may look at, never the test rows:

- the training part is dealt into ``FOLDS`` stratified folds (seeded by the job's seed);
- each recipe is fitted on every fold's complement exactly as the final model is (the
  network with its own validation split carved from those rows, the line on all of
  them) and every training row is scored by the model that did not see it: its
  out-of-fold logits and NLL;
- ``RULE``, the one-standard-error rule: the network only when its mean out-of-fold NLL
  is lower than the line's by more than ``STANDARD_ERRORS`` standard error of the mean
  per-row difference; else the line, the simpler model, as good within the noise of
  the folds (Breiman's rule, as in Hastie, Tibshirani and Friedman, section 7.10). The
  chosen recipe is then fitted on the training part as before; the line's out-of-fold
  logits are what its temperature is fitted on (it holds no validation split out), also
  with ``--architecture linear``.

NLL, not accuracy, decides, as it decides early stopping and calibration: it moves with
every row's probability, where accuracy moves by whole rows. Three folds: three network
fits (about 5 s on a 450-row table, 10 to 30 s on iris and the 1,797-row digits table)
and three of the line (well under a second; measured in docs/training.md).
``--architecture network|linear`` skips the choice and trains that one (the line still
scores its folds, for its temperature). Nothing here imports TensorFlow until a recipe is
fitted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from model_training.data import Split, default_validation_split

if TYPE_CHECKING:
    from model_training.table_model import TableConfig

#: The two recipes: their hidden layers (the network's are ``table_model.HIDDEN_UNITS``;
#: none: the linear special case, solved by ``table_model.fit_linear``).
RECIPES: dict[str, tuple[int, ...]] = {"network": (64,), "linear": ()}
#: ``--architecture``: choose by cross-validation, or force one recipe.
ARCHITECTURES = ("auto", *RECIPES)
#: Stratified folds of the training rows the choice is made on.
FOLDS = 3
#: The network must beat the line's mean out-of-fold NLL by this many standard errors.
STANDARD_ERRORS = 1.0
#: How the out-of-fold NLLs decide.
RULE = (
    "one standard error: the network when its mean out-of-fold NLL is lower by more than "
    "one standard error of the mean per-row difference, else the linear model"
)


@dataclass(frozen=True)
class Selection:
    """Which recipe is trained, and the cross-validated scores it was chosen by."""

    chosen: str
    method: str
    nll: dict[str, float] | None = None
    """Each recipe's mean out-of-fold NLL (``None``: not cross-validated)."""
    accuracy: dict[str, float] | None = None
    """Each recipe's out-of-fold accuracy, for information: the NLL decides."""
    standard_error: float | None = None
    """The standard error of the mean per-row difference of the two NLLs: the margin the
    network must win by (``STANDARD_ERRORS`` of them)."""
    folds: int = FOLDS
    seconds: float = 0.0
    rows: dict[str, npt.NDArray[np.float64]] | None = field(default=None, repr=False)
    """Each recipe's out-of-fold NLL of every training row (not recorded in the metadata)."""
    logits: dict[str, npt.NDArray[np.float64]] | None = field(default=None, repr=False)
    """Each cross-validated recipe's out-of-fold logits of every training row: the line's
    calibrate it (not recorded in the metadata)."""

    def as_metadata(self) -> dict[str, Any]:
        """The metadata's ``training.model_selection``."""
        if self.nll is None:
            return {"method": self.method, "chosen": self.chosen, "scores": None}
        return {
            "method": self.method,
            "rule": RULE,
            "chosen": self.chosen,
            "scores": self.nll,
            "accuracy": self.accuracy,
            "standard_error": self.standard_error,
            "folds": self.folds,
            "seconds": round(self.seconds, 2),
        }


def recipe(config: TableConfig, name: str) -> TableConfig:
    """``config`` made the recipe ``name`` (``RECIPES``)."""
    return replace(config, hidden_units=RECIPES[name])


def stratified_folds(y: npt.NDArray[np.int64], folds: int, seed: int) -> npt.NDArray[np.int64]:
    """The fold of each row: every class's rows shuffled and dealt round the folds in turn
    (each class continuing where the last one stopped, so the folds' sizes differ by one
    at most)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    dealt = 0
    for k in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == k))
        fold[rows] = (dealt + np.arange(len(rows))) % folds
        dealt += len(rows)
    return fold


def out_of_fold(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    num_classes: int,
    one_hot: npt.NDArray[np.bool_],
    config: TableConfig,
    validation_split: float | None,
    folds: int = FOLDS,
) -> npt.NDArray[np.float64]:
    """Each row's logits by the recipe ``config`` fitted without it: on the other folds.

    Each fold's model is trained by ``train_table`` on the other folds (their rows in
    their own order, which is random: the training part's), the network with
    ``validation_split`` of them for early stopping (``None``: the default for that many
    rows), and scored on the fold.
    """
    from model_training.model import logits
    from model_training.table_model import train_table

    fold = stratified_folds(y, folds, config.seed)
    scores = np.zeros((len(y), num_classes), dtype=np.float64)
    for f in range(folds):
        held = fold == f
        if not held.any():
            continue
        part = Split(x[~held], y[~held], x[held], y[held])
        split = validation_split
        if split is None:
            split = default_validation_split(len(part.y_train), num_classes)
        result = train_table(
            part, num_classes, one_hot, replace(config, validation_split=split, verbose=0)
        )
        scores[held] = logits(result.model, part.x_test)
    return scores


def row_nll(logits: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Each row's NLL under ``softmax(logits)``, in float64."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return np.asarray(-log_p[np.arange(len(y)), y], dtype=np.float64)


def select_recipe(
    data: Split,
    num_classes: int,
    one_hot: npt.NDArray[np.bool_],
    config: TableConfig,
    architecture: str = "auto",
    validation_split: float | None = None,
    folds: int = FOLDS,
) -> Selection:
    """The recipe to train on ``data``'s training part: ``architecture`` when it names one,
    else the one ``RULE`` picks from their out-of-fold NLLs there (``data``'s test part is
    not read)."""
    enough = len(data.y_train) >= 2 * folds
    if architecture in RECIPES:
        forced = f"forced: --architecture {architecture}"
        if architecture == "linear" and enough:  # no validation split: calibrated on these
            line = out_of_fold(
                data.x_train, data.y_train, num_classes, one_hot, recipe(config, "linear"), None
            )
            return Selection(architecture, forced, logits={"linear": line}, folds=folds)
        return Selection(architecture, forced)
    if architecture != "auto":
        raise ValueError(
            f"expected an architecture in {list(ARCHITECTURES)}, received {architecture!r}"
        )
    if not enough:
        return Selection(
            "network",
            f"not cross-validated: {len(data.y_train)} training rows, fewer than two per "
            f"fold of {folds}; the default recipe",
        )
    start = time.perf_counter()
    scores: dict[str, npt.NDArray[np.float64]] = {}
    rows: dict[str, npt.NDArray[np.float64]] = {}
    accuracy: dict[str, float] = {}
    for name in RECIPES:
        scores[name] = out_of_fold(
            data.x_train,
            data.y_train,
            num_classes,
            one_hot,
            recipe(config, name),
            validation_split,
            folds,
        )
        rows[name] = row_nll(scores[name], data.y_train)
        accuracy[name] = float((scores[name].argmax(axis=1) == data.y_train).mean())
    gain = rows["linear"] - rows["network"]  # > 0 where the network predicts the row better
    standard_error = float(gain.std(ddof=1) / np.sqrt(len(gain)))
    chosen = "network" if gain.mean() > STANDARD_ERRORS * standard_error else "linear"
    return Selection(
        chosen,
        f"{folds}-fold stratified cross-validation on the training rows (the test rows "
        "untouched), each recipe fitted on every fold's complement as the final model is and "
        "scored on the fold",
        {name: float(values.mean()) for name, values in rows.items()},
        accuracy,
        standard_error,
        folds,
        time.perf_counter() - start,
        rows,
        scores,
    )
