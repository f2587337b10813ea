"""Serve Keras softmax classifiers from a model repository over HTTP.

Layers, each ignorant of the one above: ``routes`` (HTTP) -> ``dataplane``
(model registry, request semantics) -> ``runtime`` (numpy in, numpy out).
"""

__version__ = "0.1.0"
