"""The loaded models: which versions of which models are served, and how that changes.

Loading a version: read and check its metadata, verify every file's sha256, start
its runtime, then warm it up with a probe batch that must give finite
probabilities summing to 1. A version that fails any step is refused with one
log line and the others keep serving.

Which versions are served follows the version policy (``service.repository.policy``) applied
to the versions on disk, newest first, skipping refused ones. Each version goes
through TF Serving's states::

    LOADING ──> AVAILABLE ──> UNLOADING ──> END
       │
       └──────> END (refused, with the reason)

A new version is loaded and warmed up off the event loop while the old one keeps
answering, then the served set is swapped in one assignment. A request holds the
``LoadedVersion`` it resolved until it has answered, so requests in flight finish
on the version they started with; a version that leaves the served set is
``UNLOADING`` until the last of them lets go of it (CPython frees it at once), then
``END``. A refused version is not tried again until its files change or a reload
is asked for.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.errors import (
    LabelNotFound,
    ModelLoadError,
    ModelNotFound,
    NotReady,
    VersionNotFound,
    VersionRefused,
)
from service.inference.batching import Batcher, BatchingConfig
from service.inference.images import pillow
from service.inference.inputs import Inputs
from service.inference.runtime import (
    KerasRuntime,
    LiteRTRuntime,
    Logits,
    NamedLiteRTRuntime,
    Runtime,
)
from service.inference.scores import Scorer
from service.inference.softmax import softmax
from service.inference.text import Vectorizer, describe, vectorizer
from service.repository import disk
from service.repository.artifact import LOOKUPS, METADATA, MODEL_KERAS, MODEL_TFLITE, TEXT
from service.repository.disk import ServedMetadata
from service.repository.policy import VersionPolicy
from service.repository.rollout import NO_ROLLOUT, ROLLOUT, STABLE, Rollout, read_rollout

log = logging.getLogger("service.repository.registry")


@dataclass(frozen=True)
class LoadedVersion:
    """One servable model version: its metadata and its runtime."""

    metadata: ServedMetadata
    runtime: Runtime
    runtime_name: str
    labels: npt.NDArray[np.str_] = field(repr=False)
    batcher: Batcher | None = field(default=None, repr=False)
    text: Vectorizer | None = field(default=None, repr=False)
    """A raw-text model's string preprocessing (``text.json``), run before the runtime."""
    lookups: dict[str, Vectorizer] | None = field(default=None, repr=False)
    """A model of several inputs: its string inputs' lookups by name (``lookups.json``)."""
    scorer: Scorer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        meta = self.metadata
        ood_dim = meta.ood.dim if meta.ood is not None else meta.input_dim
        scorer = Scorer(len(meta.class_names), ood_dim, meta.ood_detector)
        object.__setattr__(self, "scorer", scorer)

    def split(self, outputs: Logits, x: Inputs) -> tuple[Logits, Inputs | npt.NDArray[np.float64]]:
        """The logits, and what the OOD distance is measured on: the instances ``x``, or the
        features the runtime outputs after the logits (``OODReference.space``)."""
        classes = len(self.labels)
        if self.metadata.extra_outputs:
            return outputs[:, :classes], outputs[:, classes:].astype(np.float64)
        return outputs, x

    @property
    def name(self) -> str:
        """The model's name."""
        return self.metadata.name

    @property
    def version(self) -> int:
        """The version number."""
        return self.metadata.version


class State(enum.StrEnum):
    """A version's state, named as TF Serving names them."""

    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


@dataclass(frozen=True)
class VersionStatus:
    """Where one version is in its lifecycle; ``error`` says why it was refused."""

    version: int
    state: State
    error: str = ""
    #: Which load this status belongs to, so a late "unloaded" cannot overwrite a reload.
    load_id: int = field(default=0, compare=False)


def _open_runtime(version_dir: Path, metadata: ServedMetadata) -> tuple[Runtime, str]:
    spec = metadata.input_spec
    outputs = len(metadata.class_names) + metadata.extra_outputs
    if spec.inputs is not None:
        if MODEL_TFLITE not in metadata.files:
            raise ModelLoadError(
                f"expected {MODEL_TFLITE} for a model of several inputs (the Keras runtime "
                f"takes one input), received {sorted(metadata.files)}"
            )
        named = [(i.name, i.shape, i.dtype) for i in spec.inputs]
        return NamedLiteRTRuntime(version_dir / MODEL_TFLITE, named, outputs), "litert"
    if MODEL_TFLITE in metadata.files:
        return LiteRTRuntime(version_dir / MODEL_TFLITE, spec.shape, outputs, spec.dtype), "litert"
    if MODEL_KERAS in metadata.files:
        runtime = KerasRuntime(version_dir / MODEL_KERAS, features=metadata.extra_outputs > 0)
        if (runtime.shape, runtime.dtype, runtime.outputs) != (spec.shape, spec.dtype, outputs):
            raise ModelLoadError(
                f"expected {MODEL_KERAS} to map {spec.dtype} {spec.shape} to {outputs} "
                f"outputs (as its metadata says), received {runtime.dtype} {runtime.shape} "
                f"-> {runtime.outputs}"
            )
        return runtime, "keras"
    raise ModelLoadError(
        f"model {metadata.name!r} version {metadata.version}: expected model.tflite or "
        f"model.keras among its files, received {sorted(metadata.files)}"
    )


def _open_bare(version_dir: Path, name: str, version: int) -> tuple[Runtime, ServedMetadata]:
    """A ``model.keras`` dropped in without metadata: served through Keras, described by itself."""
    advice = (
        f"'python -m model_training export {version_dir / MODEL_KERAS} --name {name} "
        f"--model-repository {version_dir.parent.parent}' "
        "writes a checked version with a LiteRT export"
    )
    try:
        runtime = KerasRuntime(version_dir / MODEL_KERAS)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{exc}; {advice}") from exc
    try:
        metadata = disk.bare_metadata(
            version_dir, name, version, runtime.describe(), runtime.outputs
        )
    except ValueError as exc:
        raise ModelLoadError(f"{MODEL_KERAS} is not a model the service can take: {exc}") from exc
    log.warning(
        "model %r version %s has only %s and no %s: served through Keras, with no hash "
        "check possible and classes named 0..%d; %s",
        name,
        version,
        MODEL_KERAS,
        METADATA,
        runtime.outputs - 1,
        advice,
    )
    return runtime, metadata


def _warm_up(runtime: Runtime, metadata: ServedMetadata) -> None:
    """Run a probe batch (both batch shapes the service will see first) and check the answers."""
    rng = np.random.default_rng(0)
    for rows in (8, 1):
        probe = metadata.input_spec.probe(rows, rng)
        classes = len(metadata.class_names)
        outputs = np.asarray(runtime.logits(probe))
        if outputs.shape != (rows, classes + metadata.extra_outputs):
            raise ModelLoadError(
                f"model {metadata.name!r} version {metadata.version}: expected probe outputs of "
                f"shape {(rows, classes + metadata.extra_outputs)}, received {outputs.shape}"
            )
        logits = outputs[:, :classes]
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
    try:
        if disk.is_bare(version_dir):
            runtime, metadata = _open_bare(version_dir, name, version)
            runtime_name = "keras"
        else:
            metadata = disk.read_metadata(version_dir, name, version)
            disk.verify_files(version_dir, metadata)
            runtime, runtime_name = _open_runtime(version_dir, metadata)
        text = _open_text(version_dir, metadata)
        lookups = _open_lookups(version_dir, metadata)
    except ModelLoadError as exc:
        where = f"model {name!r} version {version}"
        if str(exc).startswith(where):
            raise
        raise ModelLoadError(f"{where}: {exc}") from exc
    _warm_up(runtime, metadata)
    if metadata.input_spec.kind == "image":
        pillow()  # imported while loading, not by the first image request
    config = batching(name, runtime)
    batcher = Batcher(runtime, config) if config.enabled else None
    labels = np.asarray(metadata.class_names)
    return LoadedVersion(metadata, runtime, runtime_name, labels, batcher, text, lookups)


def _open_text(version_dir: Path, metadata: ServedMetadata) -> Vectorizer | None:
    """A text model's preprocessing, from its ``text.json`` (hashed like the other files)."""
    if metadata.input_spec.kind != "text":
        return None
    if TEXT not in metadata.files:
        raise ModelLoadError(f"expected {TEXT} among the files of a text model, received none")
    try:
        description = json.loads((version_dir / TEXT).read_text(encoding="utf-8"))
        return vectorizer(describe(description))
    except (OSError, ValueError) as exc:  # a pydantic ValidationError is a ValueError
        raise ModelLoadError(f"expected a readable {TEXT}: {exc}") from exc


def _open_lookups(version_dir: Path, metadata: ServedMetadata) -> dict[str, Vectorizer] | None:
    """A model of several inputs: the lookups of its string inputs (``lookups.json``)."""
    inputs = metadata.input_spec.inputs
    if inputs is None:
        return None
    strings = [spec.name for spec in inputs if spec.kind == "text"]
    if not strings:
        return {}
    if LOOKUPS not in metadata.files:
        raise ModelLoadError(
            f"expected {LOOKUPS} among the files of a model with string inputs {strings}, "
            "received none"
        )
    try:
        described = json.loads((version_dir / LOOKUPS).read_text(encoding="utf-8"))
        if sorted(described) != sorted(strings):
            raise ValueError(
                f"expected lookups for {sorted(strings)}, received {sorted(described)}"
            )
        return {name: vectorizer(describe(described[name])) for name in strings}
    except (OSError, ValueError) as exc:  # a pydantic ValidationError is a ValueError
        raise ModelLoadError(f"expected a readable {LOOKUPS}: {exc}") from exc


#: Told of every status change, with the model's name; called from whichever thread made it.
Listener = Callable[[str, VersionStatus], None]

#: What identifies a version's files on disk: (name, size, mtime) of each entry.
Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(version_dir: Path) -> Fingerprint:
    """Changes whenever a file of the version is added, removed, rewritten or touched."""
    try:
        entries = sorted(version_dir.iterdir())
        return tuple((p.name, (s := p.stat()).st_size, s.st_mtime_ns) for p in entries)
    except OSError:
        return ()


class ModelRegistry:
    """Every served version of every model in one repository, kept in step with the disk.

    Reads (``get``, ``names``, ``versions``, ``status``) are lock-free: they see one
    published snapshot. Changes (``load_all``, ``poll``, ``reload``, ``unload``) run
    one at a time, in whatever thread calls them (never the event loop: loading
    takes milliseconds to seconds).
    """

    def __init__(
        self,
        repository: Path,
        default_model: str | None = None,
        batching: BatchingPolicy = never_batch,
        policy: VersionPolicy | None = None,
    ) -> None:
        self.repository = repository
        self.policy = policy or VersionPolicy()
        self._configured_default = default_model
        self._batching = batching
        #: The served versions: replaced as a whole on every change, never mutated.
        self._models: dict[str, dict[int, LoadedVersion]] = {}
        #: Every version's latest status; single-item assignments only (atomic).
        self._status: dict[str, dict[int, VersionStatus]] = {}
        self._refused: dict[tuple[str, int], Fingerprint] = {}
        #: Each model's rollout (``serving.json``): replaced as a whole, never mutated.
        self._rollouts: dict[str, Rollout] = {}
        #: What the rollout was last checked against: its file, and the served versions.
        self._rollout_seen: dict[str, tuple[Fingerprint, tuple[int, ...]]] = {}
        self._unloaded: set[str] = set()
        self._changing = threading.Lock()
        self._load_ids = count(1)
        self._repository_missing = False
        self._listeners: list[Listener] = []
        self.loaded = False

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(name, status)`` on every status change (metrics, say)."""
        self._listeners.append(listener)

    # --- changes -----------------------------------------------------------------------

    def load_all(self) -> None:
        """Scan the repository and load what the version policy asks for."""
        started = time.perf_counter()
        self.poll()
        self.loaded = True
        if not self._models:
            log.warning("no loadable model in %s", self.repository)
        log.info("models ready in %.0f ms", (time.perf_counter() - started) * 1e3)

    def poll(self) -> None:
        """Apply what changed on disk: new versions, removed versions, changed refused ones."""
        with self._changing:
            if not self.repository.is_dir():
                if not self._repository_missing:
                    log.warning(
                        "model repository %s is missing; serving what is loaded", self.repository
                    )
                self._repository_missing = True
                return
            self._repository_missing = False
            names = set(disk.model_names(self.repository)) | set(self._models)
            for name in sorted(names - self._unloaded):
                self._reconcile(name, force=False)

    def reload(self, name: str) -> list[VersionStatus]:
        """Load ``name`` now, retrying refused versions; raises ``VersionRefused`` on a refusal.

        Also undoes ``unload``. Returns the model's statuses.
        """
        with self._changing:
            if not self._on_disk(name) and name not in self._models:
                raise ModelNotFound(
                    f"expected a model of the repository {disk.model_names(self.repository)}"
                    f", received {name!r}"
                )
            self._unloaded.discard(name)
            refusals = self._reconcile(name, force=True)
        serving = self.versions(name)
        if refusals:
            keeps = f"version {serving[-1]} keeps serving" if serving else "no version serves"
            raise VersionRefused(
                f"failed to load model {name!r}: {'; '.join(refusals)}; {keeps}",
                detail=[_status_json(s) for s in self.status(name, missing_ok=True)],
            )
        if not serving:
            on_disk = disk.version_numbers(self.repository / name)
            raise VersionRefused(
                f"failed to load model {name!r}: expected a version the policy "
                f"{str(self.policy)!r} serves, received versions {on_disk} on disk"
            )
        return self.status(name)

    def unload(self, name: str) -> None:
        """Stop serving every version of ``name`` until ``reload``; unknown names are ignored."""
        with self._changing:
            if name not in self._models and not self._on_disk(name):
                return
            self._unloaded.add(name)
            self._publish(name, self._models.get(name, {}), {})

    def _on_disk(self, name: str) -> bool:
        return disk.is_model_name(name) and (self.repository / name).is_dir()

    def _reconcile(self, name: str, *, force: bool) -> list[str]:
        """Load and swap in what the policy wants for ``name``; returns the refusals."""
        model_dir = self.repository / name
        on_disk = disk.version_numbers(model_dir) if self._on_disk(name) else []
        served = self._models.get(name, {})
        target: dict[int, LoadedVersion] = {}
        loaded_now: dict[int, int] = {}
        refusals: list[str] = []
        limit = self.policy.limit
        for version in self.policy.candidates(on_disk):
            if limit is not None and len(target) >= limit:
                break
            if version in served:
                target[version] = served[version]
                continue
            version_dir = model_dir / str(version)
            prints = fingerprint(version_dir)
            if not force and self._refused.get((name, version)) == prints:
                continue  # refused before and unchanged since: not worth another try
            load_id = next(self._load_ids)
            self._set(name, VersionStatus(version, State.LOADING, load_id=load_id))
            try:
                target[version] = load_version(version_dir, name, version, self._batching)
            except Exception as exc:  # a refusal; anything else a runtime raised means the same
                if isinstance(exc, ModelLoadError):
                    reason = str(exc)
                    log.error("refusing %s", reason)
                else:  # the details (paths, internals) go to the log only
                    reason = f"model {name!r} version {version}: unexpected {type(exc).__name__}"
                    log.exception("refusing %s while loading", reason)
                self._refused[(name, version)] = prints
                self._set(name, VersionStatus(version, State.END, reason, load_id))
                refusals.append(f"version {version} is at UNAVAILABLE state: {reason}")
                continue
            self._refused.pop((name, version), None)
            loaded_now[version] = load_id
        self._publish(name, served, target, loaded_now)
        self._read_rollout(name)
        return refusals

    def _read_rollout(self, name: str) -> None:
        """Re-read ``name``'s ``serving.json`` when it or the served versions changed; a
        file that cannot be used (or names a version not served) is refused with one log
        line and the previous rollout kept, as TF Serving keeps its labels."""
        model_dir = self.repository / name
        try:
            stat = (model_dir / ROLLOUT).stat()
            prints: Fingerprint = ((ROLLOUT, stat.st_size, stat.st_mtime_ns),)
        except OSError:
            prints = ()
        served = tuple(sorted(self._models.get(name, {})))
        if self._rollout_seen.get(name) == (prints, served):
            return
        self._rollout_seen[name] = (prints, served)
        try:
            rollout = read_rollout(model_dir)
            if served:
                rollout.check(list(served))
        except ValueError as exc:
            log.error(
                "refusing %s of model %r: %s; keeping its previous rollout", ROLLOUT, name, exc
            )
            return
        if rollout != self._rollouts.get(name, NO_ROLLOUT):
            rollouts = dict(self._rollouts)
            rollouts[name] = rollout
            self._rollouts = rollouts
            log.info("model %r rollout: %s", name, rollout.model_dump_json(exclude_defaults=True))

    def _publish(
        self,
        name: str,
        served: dict[int, LoadedVersion],
        target: dict[int, LoadedVersion],
        loaded_now: dict[int, int] | None = None,
    ) -> None:
        """Swap ``target`` in for ``name`` (one assignment), then retire what left."""
        if target.keys() == served.keys():
            return
        models = dict(self._models)
        if target:
            models[name] = target
        else:
            models.pop(name, None)
        self._models = models  # the swap: new requests resolve to the new set from here on
        for version, load_id in (loaded_now or {}).items():
            loaded = target[version]
            self._set(name, VersionStatus(version, State.AVAILABLE, load_id=load_id))
            log.info(
                "loaded model %r version %d (%s%s)",
                name,
                version,
                loaded.runtime_name,
                ", batching" if loaded.batcher else "",
            )
        for version in served.keys() - target.keys():
            self._retire(name, served[version])

    def _retire(self, name: str, loaded: LoadedVersion) -> None:
        version = loaded.version
        current = self._status.get(name, {}).get(version)
        load_id = current.load_id if current else 0
        self._set(name, VersionStatus(version, State.UNLOADING, load_id=load_id))
        log.info("unloading model %r version %d after its last request", name, version)
        weakref.finalize(loaded, self._released, name, version, load_id)

    def _released(self, name: str, version: int, load_id: int) -> None:
        """The last reference to a retired version is gone: it is unloaded."""
        current = self._status.get(name, {}).get(version)
        if current is not None and current.load_id == load_id and current.state is State.UNLOADING:
            self._set(name, VersionStatus(version, State.END, load_id=load_id))
            log.info("unloaded model %r version %d", name, version)

    def _set(self, name: str, status: VersionStatus) -> None:
        # Item assignments only: atomic, so finalizers may call this from any thread.
        self._status.setdefault(name, {})[status.version] = status
        for listener in self._listeners:
            try:
                listener(name, status)
            except Exception:  # an observer's bug must not stop a reload
                log.exception("status listener failed for model %r", name)

    # --- reads -------------------------------------------------------------------------

    @property
    def default_model(self) -> str | None:
        """The configured default, else the only model, else none."""
        if self._configured_default is not None:
            return self._configured_default
        return next(iter(self._models)) if len(self._models) == 1 else None

    @property
    def ready(self) -> bool:
        """Loaded, with the default model servable: ``/predict`` works.

        With several models and no ``SERVICE_DEFAULT_MODEL``, ``/predict`` cannot choose,
        so the server is not ready; it says why.
        """
        if not self.loaded or not self._models:
            return False
        default = self.default_model
        return default is not None and default in self._models

    def not_ready_reason(self) -> str:
        """Why ``ready`` is false, for the 503 body."""
        if not self.loaded:
            return "not ready: models are still loading"
        if not self._models:
            if self._unloaded:
                return (
                    "not ready: expected a model to serve, received none: "
                    f"{sorted(self._unloaded)} unloaded on request (load one again)"
                )
            return "not ready: no loadable model in the repository"
        if self.default_model is None:
            return (
                f"not ready: expected SERVICE_DEFAULT_MODEL to name the model /predict serves, "
                f"received no default and several models {self.names()}"
            )
        return f"not ready: the default model {self.default_model!r} could not be loaded"

    def names(self) -> list[str]:
        """Served model names, sorted."""
        return sorted(self._models)

    def versions(self, name: str) -> list[int]:
        """Served versions of ``name``, oldest first."""
        return sorted(self._models.get(name, {}))

    def known(self) -> list[str]:
        """Every model that is served, has a status, or is in the repository, sorted."""
        on_disk = disk.model_names(self.repository)
        return sorted(set(self._models) | set(self._status) | set(on_disk))

    def status(self, name: str, *, missing_ok: bool = False) -> list[VersionStatus]:
        """Every version of ``name`` the registry has tried, oldest first; 404 if none."""
        if not self.loaded:
            raise NotReady(self.not_ready_reason())
        statuses = dict(self._status.get(name, {}))
        if not statuses and not missing_ok:
            raise ModelNotFound(
                f"expected a model the server has loaded or tried to load {sorted(self._status)}, "
                f"received {name!r}"
            )
        return [statuses[v] for v in sorted(statuses)]

    def rollout(self, name: str) -> Rollout:
        """``name``'s labels, canary and shadow (none of them without a ``serving.json``)."""
        return self._rollouts.get(name, NO_ROLLOUT)

    def get(
        self,
        name: str | None = None,
        version: str | int | None = None,
        label: str | None = None,
    ) -> LoadedVersion:
        """The version to serve: the one asked for by number or label, else the one
        labelled ``stable`` (``serving.json``) if it is served, else the newest; raises
        404/503 errors."""
        if label is not None:
            version = self._labelled(name, label)
        if not self.loaded:
            raise NotReady(self.not_ready_reason())
        if name is None:
            name = self.default_model
            if name is None and not self._models:
                raise NotReady(self.not_ready_reason())
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
            stable = self.rollout(name).version_labels.get(STABLE)
            return versions[stable if stable in versions else max(versions)]
        number = int(version) if isinstance(version, int) or str(version).isdigit() else None
        if number is None or number not in versions:
            raise VersionNotFound(
                f"expected a served version of model {name!r} ({sorted(versions)}), "
                f"received {str(version)[:40]!r}"
            )
        return versions[number]

    def _labelled(self, name: str | None, label: str) -> int:
        """The version ``label`` names in model ``name``'s rollout (404 if none)."""
        labels = self.rollout(name or "").version_labels
        if label not in labels:
            raise LabelNotFound(
                f"expected a label of model {name!r} ({sorted(labels)}), received {label[:70]!r}"
            )
        return labels[label]


def _status_json(status: VersionStatus) -> dict[str, str]:
    return {"version": str(status.version), "state": status.state.value, "error": status.error}
