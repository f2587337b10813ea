"""Write the image workload's model: MobileNetV2 (alpha 0.35, 96x96x3, 10 classes), as .keras.

    python benchmarks/workloads/mobilenet_model.py OUT.keras [--seed N]

``keras.applications.MobileNetV2(weights=None)``: 423k parameters, random weights (no
download); the time per image does not depend on the weights' values. It expects
pixels in [-1, 1], so it is exported with ``--pixel-range -1 1``. Run in its own
process because it imports TensorFlow.
"""

from __future__ import annotations

import os

from keras_file import write

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHAPE = (96, 96, 3)
CLASSES = 10
ALPHA = 0.35


def build(seed: int = 0) -> object:
    """The uncompiled classifier (softmax output)."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.applications.MobileNetV2(
        input_shape=SHAPE, alpha=ALPHA, weights=None, classes=CLASSES
    )


def main() -> None:
    """Command line entry point."""
    write(build, __doc__)


if __name__ == "__main__":
    main()
