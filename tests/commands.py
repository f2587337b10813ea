"""The exact commands the container images run.

The Dockerfile and docker-compose.yml run these argv lists (with ``python`` as the
interpreter, from the working directory ``/app`` where the model repository is
mounted at ``models``); the integration tests run the very same lists for real with
``sys.executable`` from a temporary working directory. ``test_containers.py``
checks that the two never drift apart.
"""

TRAIN_ARGV: tuple[str, ...] = ("python", "-m", "model_training", "--if-missing")
SERVE_ARGV: tuple[str, ...] = ("python", "-m", "service")
