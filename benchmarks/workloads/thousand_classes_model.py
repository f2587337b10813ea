"""Write the top-k workload's model: a table classifier of 1,000 classes, as .keras.

    python benchmarks/workloads/thousand_classes_model.py OUT.keras [--seed N]

32 features -> Dense(256, relu) -> Dense(1000, softmax): 265k parameters, random weights
(spread so that a few classes stand out in each answer, as a trained model's would). The
time per request does not depend on the weights' values. Run in its own process because
it imports TensorFlow.
"""

from __future__ import annotations

import os

from keras_file import write

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FEATURES = 32
CLASSES = 1000


def build(seed: int = 0) -> object:
    """The uncompiled classifier (softmax output)."""
    import keras

    keras.utils.set_random_seed(seed)
    spread = keras.initializers.RandomNormal(0.0, 0.5)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(CLASSES, activation="softmax", kernel_initializer=spread),
        ]
    )


def main() -> None:
    """Command line entry point."""
    write(build, __doc__)


if __name__ == "__main__":
    main()
