"""A table's two recipes, and which one to train: by cross-validation on the training rows.

The table recipe (``table_model``) has a linear special case: the same standardization,
penalty and optimizer with no hidden layer, a softmax regression with logistic
regression's penalty, fitted until its loss converges (its penalty, not the epoch,
regularizes it). On most tables the network is as good or better; on some small ones a
straight line wins (HELPrct, 453 rows, 3 classes, seed 42: test accuracy 0.670 and log
loss 0.746 for the network, 0.769 and 0.672 for the line, 0.736 and 0.653 for a logistic
regression). Which one a table needs is decided on the rows a trainer may look at, never
the test rows:

- the training part is dealt into ``FOLDS`` stratified folds (seeded by the job's seed);
- each recipe is fitted on every fold's complement exactly as the final model is (its
  own validation split carved from those rows) and every training row is scored by the
  model that did not see it: its out-of-fold NLL;
- ``RULE``: the lower mean out-of-fold NLL wins; on a tie the network, the default
  recipe, stays. The chosen recipe is then fitted on the training part as before.

NLL, not accuracy, decides, as it decides early stopping and calibration: it moves with
every row's probability, where accuracy moves by whole rows. Three folds: six fits, about
7 s on a 450-row table and 15 to 20 s on iris and the 1,797-row digits table (measured in
docs/training.md). ``--architecture network|linear`` skips the cross-validation and trains
that one. Nothing here imports TensorFlow until a recipe is fitted.
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

#: The two recipes: their hidden layers (the network's are ``table_model.HIDDEN_UNITS``),
#: and whether early stopping watches the fitted rows' NLL until it converges (the linear
#: model, regularized by its L2 penalty alone) rather than the validation split's.
RECIPES: dict[str, tuple[tuple[int, ...], bool]] = {
    "network": ((64,), False),
    "linear": ((), True),
}
#: ``--architecture``: choose by cross-validation, or force one recipe.
ARCHITECTURES = ("auto", *RECIPES)
#: Stratified folds of the training rows the choice is made on.
FOLDS = 3
#: How the out-of-fold NLLs decide.
RULE = "the lower mean out-of-fold NLL; on a tie, the network"


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
    """The standard error of the mean per-row difference of the two NLLs."""
    folds: int = FOLDS
    seconds: float = 0.0
    rows: dict[str, npt.NDArray[np.float64]] | None = field(default=None, repr=False)
    """Each recipe's out-of-fold NLL of every training row (not recorded in the metadata)."""

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
    hidden, converge = RECIPES[name]
    return replace(config, hidden_units=hidden, converge=converge)


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
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Each row's NLL and whether it was classified right, by the recipe ``config`` fitted
    without it: on the other folds.

    Each fold's model is trained by ``train_table`` on the other folds (their rows in
    their own order, which is random: the training part's), with ``validation_split``
    of them for early stopping (``None``: the default for that many rows), and scored
    on the fold.
    """
    from model_training.table_model import train_table

    fold = stratified_folds(y, folds, config.seed)
    nll = np.zeros(len(y), dtype=np.float64)
    right = np.zeros(len(y), dtype=bool)
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
        p = np.asarray(result.model(part.x_test, training=False), dtype=np.float64)
        truth = p[np.arange(len(part.y_test)), part.y_test]
        nll[held] = -np.log(np.maximum(truth, 1e-300))
        right[held] = p.argmax(axis=1) == part.y_test
    return nll, right


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
    if architecture in RECIPES:
        return Selection(architecture, f"forced: --architecture {architecture}")
    if architecture != "auto":
        raise ValueError(
            f"expected an architecture in {list(ARCHITECTURES)}, received {architecture!r}"
        )
    if len(data.y_train) < 2 * folds:
        return Selection(
            "network",
            f"not cross-validated: {len(data.y_train)} training rows, fewer than two per "
            f"fold of {folds}; the default recipe",
        )
    start = time.perf_counter()
    rows: dict[str, npt.NDArray[np.float64]] = {}
    accuracy: dict[str, float] = {}
    for name in RECIPES:
        rows[name], right = out_of_fold(
            data.x_train,
            data.y_train,
            num_classes,
            one_hot,
            recipe(config, name),
            validation_split,
            folds,
        )
        accuracy[name] = float(right.mean())
    gain = rows["linear"] - rows["network"]  # > 0 where the network predicts the row better
    standard_error = float(gain.std(ddof=1) / np.sqrt(len(gain)))  # recorded, not a margin
    chosen = "network" if gain.mean() >= 0 else "linear"
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
    )
