"""The loaded models: which versions of which models are served, and which is the default.

Loading a version: read and check its metadata, verify every file's sha256, start
its runtime, then warm it up with a probe batch that must give finite
probabilities summing to 1. A version that fails any step is refused with one
log line and the others keep serving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service import artifacts
from service.artifacts import Metadata
from service.batching import Batcher, BatchingConfig
from service.errors import ModelLoadError, ModelNotFound, NotReady, VersionNotFound
from service.runtime import KerasRuntime, LiteRTRuntime, Runtime
from service.softmax import softmax

log = logging.getLogger("service.registry")


@dataclass(frozen=True)
class LoadedVersion:
    """One servable model version: its metadata and its runtime."""

    metadata: Metadata
    runtime: Runtime
    runtime_name: str
    labels: npt.NDArray[np.str_] = field(repr=False)
    batcher: Batcher | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The model's name."""
        return self.metadata.name

    @property
    def version(self) -> int:
        """The version number."""
        return self.metadata.version


def _open_runtime(version_dir: Path, metadata: Metadata) -> tuple[Runtime, str]:
    dim, classes = metadata.input_dim, len(metadata.class_names)
    if "model.tflite" in metadata.files:
        return LiteRTRuntime(version_dir / "model.tflite", dim, classes), "litert"
    if "model.keras" in metadata.files:
        return KerasRuntime(version_dir / "model.keras", dim, classes), "keras"
    raise ModelLoadError(
        f"model {metadata.name!r} version {metadata.version}: expected model.tflite or "
        f"model.keras among its files, received {sorted(metadata.files)}"
    )


def _warm_up(runtime: Runtime, metadata: Metadata) -> None:
    """Run a probe batch (both batch shapes the service will see first) and check the answers."""
    rng = np.random.default_rng(0)
    for rows in (8, 1):
        probe = rng.normal(scale=10.0, size=(rows, metadata.input_dim)).astype(np.float32)
        logits = np.asarray(runtime.logits(probe))
        if logits.shape != (rows, len(metadata.class_names)):
            raise ModelLoadError(
                f"model {metadata.name!r} version {metadata.version}: expected probe logits of "
                f"shape {(rows, len(metadata.class_names))}, received {logits.shape}"
            )
        probabilities = softmax(logits, metadata.temperature)
        if not (np.isfinite(probabilities).all() and np.allclose(probabilities.sum(axis=1), 1.0)):
            raise ModelLoadError(
                f"model {metadata.name!r} version {metadata.version}: expected finite probe "
                "probabilities summing to 1, received something else"
            )


#: Decides batching for a model, given its name and runtime.
BatchingPolicy = Callable[[str, Runtime], BatchingConfig]


def never_batch(name: str, runtime: Runtime) -> BatchingConfig:
    """The default policy of a bare registry: no batching."""
    return BatchingConfig(enabled=False)


def load_version(
    version_dir: Path, name: str, version: int, batching: BatchingPolicy = never_batch
) -> LoadedVersion:
    """Check, open and warm up one version; raises ``ModelLoadError`` saying why not."""
    metadata = artifacts.read_metadata(version_dir, name, version)
    artifacts.verify_files(version_dir, metadata)
    try:
        runtime, runtime_name = _open_runtime(version_dir, metadata)
    except ModelLoadError as exc:
        raise ModelLoadError(f"model {name!r} version {version}: {exc}") from exc
    _warm_up(runtime, metadata)
    config = batching(name, runtime)
    batcher = Batcher(runtime, config) if config.enabled else None
    return LoadedVersion(metadata, runtime, runtime_name, np.asarray(metadata.class_names), batcher)


class ModelRegistry:
    """Every servable version of every model in one repository."""

    def __init__(
        self,
        repository: Path,
        default_model: str | None = None,
        batching: BatchingPolicy = never_batch,
    ) -> None:
        self.repository = repository
        self._configured_default = default_model
        self._batching = batching
        self._models: dict[str, dict[int, LoadedVersion]] = {}
        self.loaded = False

    def load_all(self) -> None:
        """Scan the repository and load every version that passes the checks."""
        started = time.perf_counter()
        models: dict[str, dict[int, LoadedVersion]] = {}
        for name in artifacts.model_names(self.repository):
            for version in artifacts.version_numbers(self.repository / name):
                try:
                    loaded = load_version(
                        self.repository / name / str(version), name, version, self._batching
                    )
                except ModelLoadError as exc:
                    log.error("refusing %s", exc)
                    continue
                models.setdefault(name, {})[version] = loaded
                log.info(
                    "loaded model %r version %d (%s%s)",
                    name,
                    version,
                    loaded.runtime_name,
                    ", batching" if loaded.batcher else "",
                )
        self._models = models
        self.loaded = True
        if not models:
            log.warning("no loadable model in %s", self.repository)
        log.info("models ready in %.0f ms", (time.perf_counter() - started) * 1e3)

    @property
    def default_model(self) -> str | None:
        """The configured default, else the only model, else none."""
        if self._configured_default is not None:
            return self._configured_default
        return next(iter(self._models)) if len(self._models) == 1 else None

    @property
    def ready(self) -> bool:
        """Loaded, with the default model (or, with no default, some model) servable."""
        if not self.loaded or not self._models:
            return False
        default = self.default_model
        return default is None or default in self._models

    def not_ready_reason(self) -> str:
        """Why ``ready`` is false, for the 503 body."""
        if not self.loaded:
            return "not ready: models are still loading"
        if not self._models:
            return "not ready: no loadable model in the repository"
        return f"not ready: the default model {self.default_model!r} could not be loaded"

    def names(self) -> list[str]:
        """Served model names, sorted."""
        return sorted(self._models)

    def versions(self, name: str) -> list[int]:
        """Served versions of ``name``, oldest first."""
        return sorted(self._models.get(name, {}))

    def get(self, name: str | None = None, version: str | int | None = None) -> LoadedVersion:
        """The version to serve: the newest unless one is asked for; raises 404/503 errors."""
        if not self.loaded:
            raise NotReady(self.not_ready_reason())
        if name is None:
            name = self.default_model
            if name is None:
                raise ModelNotFound(
                    "expected a default model: set SERVICE_DEFAULT_MODEL or call "
                    f"/models/{{name}}/predict. Received a repository with models {self.names()}"
                )
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFound(
                f"expected one of the served models {self.names()}, received {name!r}"
            )
        if version is None:
            return versions[max(versions)]
        number = int(version) if isinstance(version, int) or str(version).isdigit() else None
        if number is None or number not in versions:
            raise VersionNotFound(
                f"expected a served version of model {name!r} ({sorted(versions)}), "
                f"received {str(version)[:40]!r}"
            )
        return versions[number]
