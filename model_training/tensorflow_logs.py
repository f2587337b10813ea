"""Keep TensorFlow's and LiteRT's own log lines off a user's terminal, unless ``--verbose``.

Those lines ("oneDNN custom operations are on", ``E0000 ... use_unbounded_threadpool``,
"Created TensorFlow Lite XNNPACK delegate", CUDA plugin registration on GPU builds)
are information for TensorFlow's developers, but read like errors to someone training
their first model. They come from C++ and are written straight to file descriptor 2,
from three places:

- during training and conversion, through TensorFlow's logging, which
  ``TF_CPP_MIN_LOG_LEVEL=3`` silences (it is read once, so it must be set before
  TensorFlow is imported: ``configure``);
- while TensorFlow is imported, before that setting is read: the oneDNN notice, the
  CPU-feature notice, absl's "All log messages before absl::InitializeLog()" and the
  CUDA registration lines. ``TF_ENABLE_ONEDNN_OPTS=0`` would drop the oneDNN notice
  only by changing the arithmetic (other weights for the same seed), so instead the
  import runs with descriptor 2 captured, and every captured line except these known
  ones is written back (``filtered``);
- when a LiteRT interpreter applies its XNNPACK delegate: filtered the same way.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

#: Lines TensorFlow and LiteRT write by themselves on every run: dropped unless verbose.
NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|cpu_feature_guard\.cc"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|Created TensorFlow Lite XNNPACK delegate"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|Could not find cuda drivers on your machine"
)

_quiet = True


def configure(verbose: bool) -> None:
    """Quiet TensorFlow's logs from now on (call before it is imported), or leave them be.

    An explicit ``TF_CPP_MIN_LOG_LEVEL`` in the environment is respected.
    """
    global _quiet
    _quiet = not verbose
    if _quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def filtered() -> Iterator[None]:
    """Run the block with descriptor 2 captured; then write back all but the ``NOISE`` lines.

    Python's own output to stderr in the block (warnings, tracebacks) is kept, only later.
    Does nothing after ``configure(verbose=True)``.
    """
    if not _quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                sink.seek(0)
                captured = sink.read().decode("utf-8", errors="replace")
                kept = [
                    line for line in captured.splitlines(keepends=True) if not NOISE.search(line)
                ]
                if kept:
                    sys.stderr.write("".join(kept))
                    sys.stderr.flush()
    finally:
        os.close(saved)


def import_tensorflow() -> None:
    """Import TensorFlow and Keras now, inside ``filtered`` (a no-op once they are imported)."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return
    with filtered():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
