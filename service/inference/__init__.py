"""Inference: numpy in, numpy out. Runtimes (LiteRT, Keras), the float64 softmax, the
scores of a batch (probabilities, entropy, out-of-distribution distance), and batching.
Nothing here knows about HTTP."""
