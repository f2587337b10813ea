"""Train Keras softmax classifiers and write them into a model repository.

The only thing this package shares with ``service`` is the artifact format: a
version directory holding ``model.keras``, ``model.tflite`` and ``metadata.json``
(see ``model_training.repository``).
"""

__version__ = "0.1.0"
