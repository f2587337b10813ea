"""The data plane: the one door between every protocol and the models.

Every route of every protocol decodes its request into these calls and encodes what
they return; nothing else reaches the registry or the runtimes. Here, once: resolving
a model and version (404/503), readiness, checking instances
(``service.inference.inputs``), inference (inline, on a thread, or batched), the
float64 scores, recording what served the request (``served_record``, metrics), model
control (off unless configured: 403), and turning a runtime failure into a clear 422.
The rollout of each model (``serving.json``) is applied here too: its labels name
versions, its canary takes a share of the requests naming no version, and its shadow
version is offered each served batch (``service.operations.shadow``), through the same
scoring as any request.
Takes plain Python/numpy values, returns dataclasses; knows nothing of HTTP.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np
import numpy.typing as npt

from service.errors import (
    Forbidden,
    InferenceFailed,
    InvalidInput,
    ModelControlDisabled,
    NotFound,
    NotReady,
    PayloadTooLarge,
    ServiceError,
)
from service.inference import explain as shapley
from service.inference import kernel_shap, leave_one_out, occlusion
from service.inference import named as named_inputs
from service.inference.images import EncodedImages, decode_all
from service.inference.inputs import Inputs, Instances, features, whole_numbers
from service.inference.named import NamedColumns
from service.inference.runtime import Features, Logits
from service.inference.scores import NotFinite, Scores, top_k
from service.inference.softmax import softmax
from service.inference.tables import EncodedRows, NamedRows, encode
from service.inference.text import Texts, TokenSplit, token_split
from service.operations.feedback import FeedbackStore
from service.operations.metrics import Metrics
from service.operations.monitor import LiveMonitor
from service.operations.prediction_log import PredictionLog
from service.operations.shadow import ShadowTraffic, pair_key
from service.repository import explanations
from service.repository.registry import LoadedVersion, ModelRegistry, VersionStatus
from service.repository.rollout import CANARY, NO_ROLLOUT, STABLE

log = logging.getLogger("service.dataplane")

#: Image files up to this size in all are decoded on the event loop (tens of microseconds).
_INLINE_IMAGE_BYTES = 64 * 1024


#: What the request being handled was served with, filled in by ``DataPlane.predict``:
#: ``model``, ``version`` and ``rows``. Whoever handles requests (the gateway) sets a
#: fresh dict per request and reads it back for its metrics and access log, so no
#: protocol has to remember to say what it served: every prediction passes here.
served_record: ContextVar[dict[str, Any] | None] = ContextVar("served_record", default=None)


@dataclass(frozen=True)
class TopClasses:
    """Each instance's ``k`` most probable classes, most probable first; of equal
    probabilities, the lower class index first (``service.inference.scores.top_k``)."""

    indices: npt.NDArray[np.intp]
    """(n, k) class indices."""
    probabilities: npt.NDArray[np.float64]
    """(n, k) their probabilities, the same numbers as in the whole distribution."""
    labels: npt.NDArray[np.str_]
    """(n, k) their class names."""


@dataclass(frozen=True)
class ScoredBatch:
    """Scores for a batch (``service.inference.scores``), with the version that produced them."""

    model: LoadedVersion
    logits: Logits
    scores: Scores
    unseen: list[dict[str, str]] | None = None
    """For a table with categorical columns sent as named features: per instance, the
    features whose value was never seen in training (encoded as out of vocabulary)."""
    top: TopClasses | None = None
    """Each instance's most probable classes, when the request asked for its top k."""

    @property
    def probabilities(self) -> npt.NDArray[np.float64]:
        """(n, K) float64 class probabilities."""
        return self.scores.probabilities

    @property
    def argmax(self) -> npt.NDArray[np.intp]:
        """(n,) the most probable class of each row."""
        return self.scores.argmax

    @property
    def entropy(self) -> npt.NDArray[np.float64]:
        """Shannon entropy of each row's distribution, in nats (0: certain; log k: uniform)."""
        return self.scores.entropy

    @property
    def ood_distance(self) -> npt.NDArray[np.float64] | None:
        """Distance of each input to the nearest training class (None: no reference)."""
        return self.scores.ood_distance

    @property
    def labels(self) -> npt.NDArray[np.str_]:
        """``class_names[argmax]`` for each row."""
        return self.model.labels[self.argmax]

    @property
    def ood(self) -> npt.NDArray[np.bool_] | None:
        """True for inputs unlike the training data (None: the version has no reference)."""
        detector, distance = self.model.metadata.ood_detector, self.ood_distance
        return None if detector is None or distance is None else detector.flags(distance)


@dataclass(frozen=True)
class Explanation:
    """Each instance's probabilities and, for the classes asked about, the Shapley value
    of each player (``service.inference.explain``)."""

    model: LoadedVersion
    players: list[str]
    """The players' names: a table's named columns, else its features."""
    attributions: list[shapley.Attributions]
    """Per instance, every class's attributions."""
    classes: npt.NDArray[np.intp]
    """(n, m) the classes explained for each instance (default: its predicted class)."""
    baseline: str
    """The background's kind: ``kmeans``, ``kmedoids``, ``training_mean`` or ``zeros``."""
    background: shapley.Background
    calibrated: bool
    model_rows: int
    """Rows the model scored for each instance: coalitions x background points."""
    method: str = shapley.METHOD
    """``exact shapley`` (every coalition), or ``kernel shap`` (a sample of them)."""
    samples: int | None = None
    """KernelSHAP's budget of coalitions besides the empty and the full one; None: exact."""

    @property
    def probabilities(self) -> npt.NDArray[np.float64]:
        """(n, K) each instance's probabilities (the full coalition's value)."""
        return np.stack([a.prediction for a in self.attributions])


@dataclass(frozen=True)
class ImageExplanation:
    """Each image's probabilities and, for the classes asked about, its occlusion heat map
    (``service.inference.occlusion``)."""

    model: LoadedVersion
    heat_maps: list[occlusion.HeatMaps]
    """Per image, every class's heat map."""
    classes: npt.NDArray[np.intp]
    """(n, m) the classes explained for each image (default: its predicted class)."""
    baseline: str
    """What a hidden patch is set to: ``training_mean`` or ``zeros``."""
    baseline_value: float
    """That value, in the model's pixel units."""
    baseline_description: str
    calibrated: bool
    patch: int
    """The patches' side in pixels (``SERVICE_EXPLAIN_PATCH``)."""
    model_rows: int
    """Rows the model scored for each image: its patches, and the image itself."""
    method: str = occlusion.METHOD


@dataclass(frozen=True)
class StepExplanation:
    """Each text's, token ids' or sequence's probabilities and, for the classes asked about,
    each token's (step's) leave-one-out attribution (``service.inference.leave_one_out``)."""

    model: LoadedVersion
    attributions: list[leave_one_out.StepAttributions]
    """Per instance, every class's attributions."""
    tokens: list[list[str]] | list[list[int]] | None
    """Per instance, its tokens: a text's as the model's layer cuts it, or the ids; None
    for float steps."""
    classes: npt.NDArray[np.intp]
    """(n, m) the classes explained for each instance (default: its predicted class)."""
    occluded: str
    """``leave one token out`` or ``leave one step out``."""
    baseline: str
    """``removed`` (a text's token), ``padding`` (a token id set to 0) or ``zeros``."""
    baseline_value: float | None
    """What a hidden id or step is set to (None: a text's token is removed)."""
    baseline_description: str
    calibrated: bool
    max_tokens: int
    """The most tokens (steps) an instance may have (``SERVICE_EXPLAIN_MAX_TOKENS``)."""
    method: str = leave_one_out.METHOD


@dataclass(frozen=True)
class ModelSummary:
    """A served model: its served versions and the one ``/predict`` and friends default to."""

    name: str
    versions: list[int]
    default_version: int


@dataclass(frozen=True)
class SoftmaxResult:
    """``softmax(logits / temperature)`` and its argmax, same leading shape as the logits."""

    probabilities: npt.NDArray[np.float64]
    argmax: npt.NDArray[np.intp]


def _named_strings(named: NamedRows) -> Texts:
    """Strings each under the model's one input name (``{"text": "..."}``, as TF Serving's
    clients send them to a text model), or a 422 saying what was expected."""
    strings = []
    for i, row in enumerate(named.rows):
        values = list(row.values())
        if len(values) != 1 or not isinstance(values[0], str):
            raise InvalidInput(
                "expected each instance to be a string, or an object naming the model's one "
                f"input with a string, received an object of {len(values)} values in "
                f"instances[{i}]"
            )
        strings.append(values[0])
    return Texts(strings)


def _check_top(served: LoadedVersion, k: int) -> None:
    """Refuse a top k the model cannot give, before it runs."""
    classes = len(served.labels)
    if not 1 <= k <= classes:
        raise InvalidInput(
            f"expected top_k between 1 and {classes} (the number of classes of model "
            f"{served.name!r} version {served.version}), received {k}"
        )


def _class_indices(served: LoadedVersion, classes: Sequence[str | int]) -> npt.NDArray[np.intp]:
    """The indices of the classes an explanation asks for, by name or index (else 422)."""
    names = served.metadata.class_names
    if not classes:
        raise InvalidInput("expected at least one class to explain, received an empty list")
    indices = []
    for asked in classes:
        if isinstance(asked, str) and asked in names:
            indices.append(names.index(asked))
        elif isinstance(asked, int) and not isinstance(asked, bool) and 0 <= asked < len(names):
            indices.append(asked)
        else:
            shown = names[:10] + (["..."] if len(names) > 10 else [])
            raise InvalidInput(
                f"expected classes of model {served.name!r} by name {shown} or index 0 to "
                f"{len(names) - 1}, received {str(asked)[:64]!r}"
            )
    return np.asarray(indices, dtype=np.intp)


def _top_classes(served: LoadedVersion, scores: Scores, k: int) -> TopClasses:
    """Each row's ``k`` most probable classes, taken from its whole distribution."""
    indices, probabilities = top_k(scores.probabilities, k)
    return TopClasses(indices, probabilities, served.labels[indices])


class DataPlane:
    """Predictions and softmax for the routes."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        max_batch_rows: int = 100_000,
        max_values_per_row: int = 10_000,
        max_image_pixels: int = 16_777_216,
        max_steps: int = 4096,
        max_json_depth: int = 32,
        explain_max_instances: int = 16,
        explain_max_features: int = 12,
        explain_samples: int = 2048,
        explain_max_sampled_features: int = 200,
        explain_patch: int = 8,
        explain_max_patches: int = 256,
        explain_max_tokens: int = 512,
        metrics: Metrics | None = None,
        model_control: bool = False,
        shadow: ShadowTraffic | None = None,
        monitor: LiveMonitor | None = None,
        feedback: FeedbackStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.registry = registry
        self.shadow = shadow
        self.monitor = monitor
        self.feedback = feedback
        self.prediction_log: PredictionLog | None = None
        self._random = (rng or random.Random()).random  # noqa: S311 (routing, not secrets)
        self.model_control = model_control
        self.metrics = metrics
        self.max_batch_rows = max_batch_rows
        self.max_values_per_row = max_values_per_row
        self.max_image_pixels = max_image_pixels
        self.max_steps = max_steps
        self.max_json_depth = max_json_depth
        self.explain_max_instances = explain_max_instances
        self.explain_max_features = explain_max_features
        self.explain_samples = explain_samples
        self.explain_max_sampled_features = explain_max_sampled_features
        self.explain_patch = explain_patch
        self.explain_max_patches = explain_max_patches
        self.explain_max_tokens = explain_max_tokens

    # --- what is served -------------------------------------------------------------

    def resolve(
        self, model: str | None = None, version: str | None = None, label: str | None = None
    ) -> LoadedVersion:
        """The version ``model``/``version`` (or ``label``) names (404/503 if none); naming
        none, the one labelled ``stable`` if it is served, else the newest."""
        return self.registry.get(model, version, label)

    def route(
        self, model: str | None = None, version: str | None = None, label: str | None = None
    ) -> LoadedVersion:
        """The version a prediction is served by: as ``resolve``, except that a request
        naming no version or label goes to the model's ``canary`` version for the
        rollout's ``canary_fraction`` of requests (counted by route)."""
        served = self.registry.get(model, version, label)
        if version is not None or label is not None:
            return served
        rollout = self.registry.rollout(served.name)
        fraction = rollout.canary_fraction
        if fraction == 0:
            return served
        route = STABLE if rollout.version_labels.get(STABLE) == served.version else "newest"
        if self._random() < fraction:
            try:
                served = self.registry.get(served.name, label=CANARY)
                route = CANARY
            except NotFound:  # the canary's version is not served (any more): the default
                pass
        if self.metrics is not None:
            self.metrics.count_route(served.name, str(served.version), route)
        return served

    def _loaded(self) -> ModelRegistry:
        """The registry, once the repository's first load has finished (503 before)."""
        if not self.registry.loaded:
            raise NotReady(self.registry.not_ready_reason())
        return self.registry

    def check_ready(self) -> None:
        """Return if the default model serves (``/predict`` works), else raise ``NotReady``."""
        if not self.registry.ready:
            raise NotReady(self.registry.not_ready_reason())

    def models(self) -> list[ModelSummary]:
        """Every served model, its served versions and the version served by default."""
        registry = self._loaded()
        return [
            ModelSummary(name, registry.versions(name), registry.get(name).version)
            for name in registry.names()
        ]

    def versions(self, name: str) -> list[int]:
        """The served versions of ``name``, oldest first."""
        return self._loaded().versions(name)

    def monitor_summary(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The served (or named) version's live window against its training references."""
        served = self.resolve(name, version)
        summary = None if self.monitor is None else self.monitor.summary(name, served.version)
        reference = getattr(served.metadata, "monitoring", None)
        if self.monitor is None:
            why = "monitoring is off (SERVICE_MONITOR_WINDOW=0)"
        elif not isinstance(reference, dict):
            why = (
                "the version has no training references (an exported model: export it "
                "with --reference-data FILE.csv to monitor it)"
            )
        else:
            why = None
        feedback = None
        if self.feedback is not None:
            feedback = self.feedback.summary(name, served.version)
        return {
            "model": name,
            "version": str(served.version),
            "monitored": why is None,
            **({"reason": why} if why else {}),
            "window": self.monitor.window if self.monitor is not None else 0,
            **(summary or {}),
            "feedback": feedback,
        }

    def label(self, name: str, request_id: str, labels: Sequence[Any]) -> dict[str, Any]:
        """Join true ``labels`` with what ``request_id`` was answered by model ``name``."""
        self._loaded()
        if self.feedback is None:
            raise Forbidden(
                "expected feedback to be on (SERVICE_FEEDBACK_MAX_BYTES above 0), received "
                "a label with feedback off"
            )
        return self.feedback.label(name, request_id, labels)

    def rollout(self, name: str) -> dict[str, Any] | None:
        """``name``'s labels, canary fraction and shadow, with the shadow's comparisons so
        far (``None`` without a ``serving.json``)."""
        rollout = self._loaded().rollout(name)
        if rollout == NO_ROLLOUT:
            return None
        body: dict[str, Any] = {
            "version_labels": {k: str(v) for k, v in sorted(rollout.version_labels.items())},
            "canary_fraction": rollout.canary_fraction,
            "shadow": None,
        }
        if rollout.shadow is not None:
            comparisons = self.shadow.summary(name) if self.shadow is not None else []
            body["shadow"] = {
                "version": str(rollout.shadow_version),
                **({"label": rollout.shadow.label} if rollout.shadow.label else {}),
                "fraction": rollout.shadow.fraction,
                "comparisons": comparisons,
            }
        return body

    def statuses(self, name: str, *, missing_ok: bool = False) -> list[VersionStatus]:
        """Every version of ``name`` the registry has tried, with its state (404 if none)."""
        return self._loaded().status(name, missing_ok=missing_ok)

    def known_models(self) -> list[str]:
        """Every model served, tried or on disk (unloaded ones included), sorted."""
        return self._loaded().known()

    def newest_versions(self) -> dict[str, int]:
        """The newest served version of each model (nothing while still loading)."""
        registry = self.registry
        return {name: max(registry.versions(name)) for name in registry.names()}

    async def predict(
        self,
        instances: Instances | EncodedImages | NamedRows | Texts | NamedColumns,
        *,
        model: str | None = None,
        version: str | None = None,
        calibrated: bool = True,
        served: LoadedVersion | None = None,
        top: int | None = None,
        label: str | None = None,
    ) -> ScoredBatch:
        """Probabilities of each instance under the requested (or default, newest) version;
        with ``top``, also each instance's ``top`` most probable classes (``ScoredBatch.top``).
        ``served``: the version ``route`` chose (else it chooses)."""
        served = served or self.route(model, version, label)
        if len(instances) > self.max_batch_rows:
            raise PayloadTooLarge(
                f"expected at most {self.max_batch_rows} instances per request, "
                f"received {len(instances)}"
            )
        if top is not None:
            _check_top(served, top)
        unseen = None
        if served.metadata.input_spec.inputs is not None or isinstance(instances, NamedColumns):
            x32 = self._named_inputs(served, instances)
            x: Inputs = x32
        elif isinstance(instances, EncodedImages):
            x, x32 = await self._images(served, instances)
        elif isinstance(instances, NamedRows) and served.text is not None:
            x, x32 = self._texts(served, _named_strings(instances))
        elif isinstance(instances, NamedRows):
            encoded = self._named(served, instances)
            x, x32 = self._checked(served, encoded.x)
            unseen = encoded.unseen if served.metadata.categorical else None
        elif isinstance(instances, Texts):
            x, x32 = self._texts(served, instances)
        else:
            if served.text is not None:
                raise InvalidInput(
                    f"expected instances as strings (model {served.name!r} takes raw text), "
                    "received arrays"
                )
            x, x32 = self._checked(served, instances)
        started = time.perf_counter()
        outputs = await self._outputs(served, x32)
        logits, x = served.split(outputs, x)
        elapsed = time.perf_counter() - started
        temperature = served.metadata.temperature if calibrated else 1.0
        try:
            scores = served.scorer(logits, x, temperature)
        except NotFinite as exc:
            raise InvalidInput(
                "expected instances the model can score, received values so large that "
                f"the model's logits overflow in instances[{exc.row}]"
            ) from None
        record = served_record.get()
        if record is not None:
            record["model"] = served.name
            record["version"] = served.version
            record["rows"] = len(scores)
        if self.metrics is not None:
            self.metrics.observe_prediction(
                served.name,
                str(served.version),
                elapsed,
                served.metadata.class_names,
                scores.predicted,
            )
        if record is not None and "unmonitored" in record:  # X-Softmax-Monitor: off
            best = None if top is None else _top_classes(served, scores, top)
            return ScoredBatch(served, logits, scores, unseen, best)
        if self.monitor is not None:
            self.monitor.observe(served, scores, x)
        if self.feedback is not None and record is not None and "request_id" in record:
            self.feedback.remember(
                record["request_id"],
                served.name,
                served.version,
                served.metadata.class_names,
                scores.at_hand()[0],
            )
        if self.prediction_log is not None:
            self.prediction_log.offer(
                None if record is None else record.get("request_id"),
                served.name,
                served.version,
                instances,
                scores.probabilities,
                scores.predicted,
                served.metadata.class_names,
                served.metadata.feature_names,
            )
        if self.shadow is not None:
            self._offer_shadow(served, x32, scores.probabilities, calibrated)
        best = None if top is None else _top_classes(served, scores, top)
        return ScoredBatch(served, logits, scores, unseen, best)

    async def _outputs(
        self, served: LoadedVersion, x32: Features, *, offload: bool = False
    ) -> Logits:
        """What the version's runtime outputs for ``x32`` (inline, on a thread, or batched);
        ``offload``: never inline (a large batch, which would hold the event loop)."""
        try:
            if served.batcher is None and not served.runtime.blocking and not offload:
                return served.runtime.logits(x32)  # microseconds: cheaper than any hand-off
            return await self._logits(served, x32)
        except ServiceError:
            raise
        except Exception as exc:  # the runtime refused input that passed every check
            raise self._runtime_failed(served, exc) from None

    async def explain(
        self,
        instances: Instances | EncodedImages | NamedRows | Texts | NamedColumns,
        *,
        model: str | None = None,
        version: str | None = None,
        label: str | None = None,
        classes: Sequence[str | int] | None = None,
        calibrated: bool = True,
    ) -> Explanation | ImageExplanation | StepExplanation:
        """Shapley values of each instance's class probabilities, for a table model: exact
        up to ``explain_max_features`` players, KernelSHAP's estimate above; for an image
        model, occlusion heat maps; for text, token ids or a sequence, each token (step)
        left out in turn. Each instance's variants are scored in one call through
        the version's runtime (and batcher), as any prediction is; ``classes`` (names, or
        indices) to explain instead of each instance's predicted one."""
        started = time.perf_counter()
        served = self.route(model, version, label)
        if len(instances) > self.explain_max_instances:
            raise PayloadTooLarge(
                f"expected at most {self.explain_max_instances} instances per explanation "
                f"(SERVICE_EXPLAIN_MAX_INSTANCES), received {len(instances)}"
            )
        spec = served.metadata.input_spec
        if spec.kind == "image" and spec.inputs is None:
            return await self._explain_images(served, instances, classes, calibrated, started)
        if spec.kind in ("text", "token_ids", "sequence"):
            return await self._explain_steps(served, instances, classes, calibrated, started)
        x32 = self._table_rows(served, instances)
        players = explanations.players(served.metadata)
        samples = self._explain_samples(served, len(players))
        method = shapley.METHOD if samples is None else kernel_shap.METHOD
        asked = None if classes is None else _class_indices(served, classes)
        background, baseline = explanations.background(served.metadata)
        temperature = served.metadata.temperature if calibrated else 1.0
        classes_of = len(served.labels)
        spec = served.metadata.input_spec
        attributions = []
        rows = 0
        for row in x32:
            if samples is None:
                every = shapley.coalitions(len(players))
                masks = every.masks
            else:  # the instance's own sample: the same row, the same answer
                plan = kernel_shap.plan(len(players), samples, kernel_shap.seed(row))
                masks = plan.masks
            z = shapley.coalition_rows(row, background, players, masks)
            z = (np.rint(z) if spec.integral else z).astype(spec.dtype)  # as the model takes
            outputs = await self._outputs(served, z, offload=True)
            probabilities = softmax(outputs[:, :classes_of], temperature)
            attributions.append(
                shapley.shapley(probabilities, background, every)
                if samples is None
                else kernel_shap.kernel_shap(probabilities, background, plan)
            )
            rows = len(z)
        predictions = [a.prediction for a in attributions]
        chosen = self._explained(served, method, predictions, asked, rows, started)
        return Explanation(
            served,
            players.names,
            attributions,
            chosen,
            baseline,
            background,
            calibrated,
            rows,
            method,
            samples,
        )

    async def _explain_images(
        self,
        served: LoadedVersion,
        instances: Instances | EncodedImages | NamedRows | Texts | NamedColumns,
        classes: Sequence[str | int] | None,
        calibrated: bool,
        started: float,
    ) -> ImageExplanation:
        """Occlusion heat maps of each image's class probabilities: the image and its
        variants, one patch hidden in each, scored in one call."""
        spec = served.metadata.input_spec
        tiles = occlusion.patches(spec.shape[0], spec.shape[1], self.explain_patch)
        if len(tiles.masks) > self.explain_max_patches:
            raise InvalidInput(
                f"expected images of at most {self.explain_max_patches} patches to explain "
                f"(SERVICE_EXPLAIN_MAX_PATCHES; a larger SERVICE_EXPLAIN_PATCH makes fewer), "
                f"received model {served.name!r}'s {spec.shape[0]}x{spec.shape[1]} images "
                f"of {len(tiles.masks)} patches of {self.explain_patch}"
            )
        if isinstance(instances, EncodedImages):
            x32 = (await self._images(served, instances))[1]
        elif isinstance(instances, NamedRows | Texts | NamedColumns):
            raise InvalidInput(
                f"expected instances as image files or nested arrays of shape {spec.shape} "
                f"(model {served.name!r} takes images), received "
                f"{'strings' if isinstance(instances, Texts) else 'named inputs'}"
            )
        else:
            x32 = self._checked(served, instances)[1]
        asked = None if classes is None else _class_indices(served, classes)
        value, baseline, description = explanations.pixel_baseline(served.metadata)
        value = float(np.rint(value)) if spec.integral else value
        temperature = served.metadata.temperature if calibrated else 1.0
        classes_of = len(served.labels)
        maps = []
        for image in x32:
            z = occlusion.occluded(image, value, tiles, dtype=spec.dtype)
            outputs = await self._outputs(served, z, offload=True)
            probabilities = softmax(outputs[:, :classes_of], temperature)
            maps.append(occlusion.heat_maps(probabilities, tiles))
        rows = len(tiles.masks) + 1
        predictions = [m.prediction for m in maps]
        chosen = self._explained(served, occlusion.METHOD, predictions, asked, rows, started)
        return ImageExplanation(
            served, maps, chosen, baseline, value, description, calibrated, tiles.size, rows
        )

    async def _explain_steps(
        self,
        served: LoadedVersion,
        instances: Instances | EncodedImages | NamedRows | Texts | NamedColumns,
        classes: Sequence[str | int] | None,
        calibrated: bool,
        started: float,
    ) -> StepExplanation:
        """Each token (step) of each instance left out in turn: the instance and its
        variants scored in one call, after the preprocessing a prediction has."""
        spec = served.metadata.input_spec
        asked = None if classes is None else _class_indices(served, classes)
        temperature = served.metadata.temperature if calibrated else 1.0
        classes_of = len(served.labels)
        attributions = []
        tokens: list[list[str]] | list[list[int]] | None
        if spec.kind == "text":
            texts, tokens, split = self._text_tokens(served, instances)
            for text, words in zip(texts.strings, tokens, strict=True):
                variants = Texts([text, *leave_one_out.left_out_texts(words, split.join)])
                z = self._texts(served, variants)[1]
                outputs = await self._outputs(served, z, offload=True)
                probabilities = softmax(outputs[:, :classes_of], temperature)
                attributions.append(leave_one_out.drops(probabilities, len(words)))
            occluded, baseline, value = leave_one_out.TOKENS, "removed", None
            description = (
                "each token left out of the text in turn, the others joined as the model's "
                "layer cuts them"
            )
        else:
            if isinstance(instances, EncodedImages | NamedRows | Texts | NamedColumns):
                raise InvalidInput(
                    f"expected instances as nested arrays of shape {spec.shape} (model "
                    f"{served.name!r} takes {spec.kind.replace('_', ' ')}), received "
                    f"{'strings' if isinstance(instances, Texts) else 'objects or files'}"
                )
            x32 = self._checked(served, instances)[1]
            ids = spec.kind == "token_ids"
            id_lists: list[list[int]] = []
            for i, row in enumerate(x32):
                steps = len(row)
                self._check_tokens(steps, i, "token ids" if ids else "steps")
                z, positions = leave_one_out.hidden_steps(row, 0.0, spec.dtype)
                if spec.variable:  # rows of any length: the runtime's ragged batch
                    ragged = np.empty(len(z), dtype=object)
                    ragged[:] = list(z)
                    z = ragged
                outputs = await self._outputs(served, z, offload=True)
                probabilities = softmax(outputs[:, :classes_of], temperature)
                attributions.append(leave_one_out.drops(probabilities, steps, positions))
                if ids:
                    id_lists.append([int(v) for v in np.asarray(row).reshape(-1)])
            tokens = id_lists if ids else None
            occluded = leave_one_out.TOKENS if ids else leave_one_out.STEPS
            baseline, value = ("padding", 0.0) if ids else ("zeros", 0.0)
            description = (
                "each token id in turn replaced by 0, the padding id (which a masking "
                "Embedding skips: the token left out); padding is not scored"
                if ids
                else "each step in turn set to zeros; steps already all zeros are not scored"
            )
        predictions = [a.prediction for a in attributions]
        rows = sum(a.model_rows for a in attributions)
        chosen = self._explained(
            served, leave_one_out.METHOD, predictions, asked, 0, started, total_rows=rows
        )
        return StepExplanation(
            served,
            attributions,
            tokens,
            chosen,
            occluded,
            baseline,
            value,
            description,
            calibrated,
            self.explain_max_tokens,
        )

    def _text_tokens(
        self,
        served: LoadedVersion,
        instances: Instances | EncodedImages | NamedRows | Texts | NamedColumns,
    ) -> tuple[Texts, list[list[str]], TokenSplit]:
        """A text model's strings, each cut into tokens as its layer cuts it (else a 422),
        and how it cuts them."""
        split = token_split(served.text) if served.text is not None else None
        if split is None:
            raise InvalidInput(
                f"expected a model of text cut into tokens to explain, received model "
                f"{served.name!r}, whose string input is one value (a StringLookup)"
            )
        if isinstance(instances, NamedRows):
            instances = _named_strings(instances)
        if not isinstance(instances, Texts):
            raise InvalidInput(
                f"expected instances as strings (model {served.name!r} takes raw text), "
                "received arrays or files"
            )
        tokens = []
        for i, text in enumerate(instances.strings):
            if not isinstance(text, str):
                raise InvalidInput(f"expected a string in instances[{i}], received {text!r:.64}")
            words = split.pieces(text)
            self._check_tokens(len(words), i, "tokens")
            if served.metadata.input_spec.variable and len(words) < 2:
                raise InvalidInput(
                    f"expected text of at least 2 tokens to explain (model {served.name!r} "
                    f"takes as many ids as the text has tokens: none left is no input), "
                    f"received {len(words)} in instances[{i}]"
                )
            tokens.append(words)
        return instances, tokens, split

    def _check_tokens(self, count: int, i: int, what: str) -> None:
        """Refuse an instance of more tokens (steps) than an explanation may leave out."""
        if count > self.explain_max_tokens:
            raise InvalidInput(
                f"expected at most {self.explain_max_tokens} {what} per instance to explain "
                f"(SERVICE_EXPLAIN_MAX_TOKENS), received {count} in instances[{i}]"
            )

    def _explained(
        self,
        served: LoadedVersion,
        method: str,
        predictions: list[npt.NDArray[np.float64]],
        asked: npt.NDArray[np.intp] | None,
        rows: int,
        started: float,
        *,
        total_rows: int | None = None,
    ) -> npt.NDArray[np.intp]:
        """The classes explained for each instance (its predicted one, unless ``asked``),
        with the explanation recorded and counted apart from predictions (``rows`` per
        instance, or ``total_rows`` in all)."""
        predicted = np.array([p.argmax() for p in predictions], dtype=np.intp)
        chosen = predicted[:, None] if asked is None else np.tile(asked, (len(predicted), 1))
        record = served_record.get()
        if record is not None:
            record.update(model=served.name, version=served.version, rows=len(predictions))
            record["explained"] = method
        if self.metrics is not None:
            self.metrics.observe_explanation(
                served.name,
                str(served.version),
                method,
                len(predictions),
                rows * len(predictions) if total_rows is None else total_rows,
                time.perf_counter() - started,
            )
        return chosen

    def _explain_samples(self, served: LoadedVersion, players: int) -> int | None:
        """KernelSHAP's budget of coalitions for a table of ``players`` (None: exact), or a
        422 for a table wider than any explanation may be."""
        if players <= self.explain_max_features:
            return None
        if players > self.explain_max_sampled_features:
            raise InvalidInput(
                f"expected a table of at most {self.explain_max_sampled_features} features "
                f"to explain (SERVICE_EXPLAIN_MAX_SAMPLED_FEATURES), received model "
                f"{served.name!r} version {served.version} of {players}"
            )
        # At least 4 per player: the sizes 1 and n - 1 whole, and as many pairs drawn.
        return max(self.explain_samples, 4 * players)

    def _table_rows(
        self,
        served: LoadedVersion,
        instances: Instances | EncodedImages | NamedRows | Texts | NamedColumns,
    ) -> Features:
        """A table model's checked input rows, or a 422 saying which models are explained."""
        spec = served.metadata.input_spec
        if spec.kind != "table" or served.text is not None or spec.inputs is not None:
            raise InvalidInput(
                f"expected a model of one input to explain (a table, an image, text, token "
                f"ids or a sequence), received model {served.name!r}, which takes "
                f"{spec.kind.replace('_', ' ')}"
            )
        if isinstance(instances, NamedRows):
            return self._checked(served, self._named(served, instances).x)[1]
        if isinstance(instances, EncodedImages | Texts | NamedColumns):
            raise InvalidInput(
                f"expected instances as rows of {spec.shape[0]} numbers or objects of named "
                f"features (model {served.name!r} takes a table), received "
                f"{'strings' if isinstance(instances, Texts) else 'image files'}"
            )
        return self._checked(served, instances)[1]

    async def shadow_probabilities(
        self, served: LoadedVersion, x32: Features, calibrated: bool
    ) -> npt.NDArray[np.float64]:
        """A shadow version's probabilities for a batch another version served: the same
        runtime call and float64 softmax as a request's (``service.operations.shadow``)."""
        outputs = await self._outputs(served, x32)
        temperature = served.metadata.temperature if calibrated else 1.0
        return softmax(outputs[:, : len(served.labels)], temperature)

    def _offer_shadow(
        self,
        served: LoadedVersion,
        x32: Features,
        probabilities: npt.NDArray[np.float64],
        calibrated: bool,
    ) -> None:
        """Offer the batch ``served`` answered to its model's shadow version, if it has one."""
        assert self.shadow is not None
        rollout = self.registry.rollout(served.name)
        number = rollout.shadow_version
        if number is None or number == served.version or rollout.shadow is None:
            return
        try:
            shadow = self.registry.get(served.name, number)
        except NotFound:
            return  # the file named a served version, since gone: the next poll says so
        live, other = served.metadata, shadow.metadata
        if live.input_spec != other.input_spec or len(live.class_names) != len(other.class_names):
            key = pair_key(served, shadow)
            self.shadow.not_compared(key, "different_input", len(probabilities))
            return
        self.shadow.offer(served, shadow, rollout.shadow.fraction, x32, probabilities, calibrated)

    async def _images(
        self, served: LoadedVersion, images: EncodedImages
    ) -> tuple[Inputs, Features]:
        """Image files decoded into the model's pixels (``service.inference.images``)."""
        spec = served.metadata.input_spec
        if images.total_bytes > _INLINE_IMAGE_BYTES:  # milliseconds: off the event loop
            pixels = await anyio.to_thread.run_sync(decode_all, images, spec, self.max_image_pixels)
        else:
            pixels = decode_all(images, spec, self.max_image_pixels)
        return pixels.reshape(len(pixels), -1), pixels

    def _texts(self, served: LoadedVersion, texts: Texts) -> tuple[Inputs, Features]:
        """Strings turned into the model's input by its preprocessing (``text.json``): all
        at once, or, for a model of any length, each alone at its own number of tokens."""
        spec = served.metadata.input_spec
        if served.text is None:
            raise InvalidInput(
                f"expected instances as nested arrays of shape {spec.shape} (model "
                f"{served.name!r} takes {spec.kind.replace('_', ' ')}, not text), received a "
                "string in instances[0]"
            )
        if not spec.variable:
            x32 = np.ascontiguousarray(served.text(texts.strings), dtype=spec.dtype)
            return x32, x32
        rows = np.empty(len(texts), dtype=object)
        for i, text in enumerate(texts.strings):
            row = np.ascontiguousarray(served.text([text])[0], dtype=spec.dtype)
            if len(row) == 0:
                raise InvalidInput(
                    f"expected text with at least one token (model {served.name!r} takes as "
                    f"many ids as the text has tokens), received none in instances[{i}]"
                )
            if len(row) > self.max_steps:
                raise PayloadTooLarge(
                    f"expected at most {self.max_steps} tokens per instance "
                    f"(SERVICE_MAX_STEPS), received {len(row)} in instances[{i}]"
                )
            rows[i] = row
        return rows, rows

    def _named_inputs(
        self,
        served: LoadedVersion,
        instances: Instances | EncodedImages | NamedRows | Texts | NamedColumns,
    ) -> Features:
        """A model of several inputs: objects or columns naming each input, as the structured
        batch its runtime takes (``service.inference.named``)."""
        inputs = served.metadata.input_spec.inputs
        if inputs is None:
            spec = served.metadata.input_spec
            raise InvalidInput(
                f"expected one input of shape {spec.shape} (model {served.name!r} has one "
                f"input), received inputs {sorted(instances.columns)[:5]}"  # type: ignore[union-attr]
            )
        if isinstance(instances, NamedRows):
            instances = named_inputs.from_rows(instances.rows, inputs)
        if not isinstance(instances, NamedColumns):
            names = [spec.name for spec in inputs]
            raise InvalidInput(
                f"expected each instance as an object naming each of the model's inputs "
                f"{names}, received {'strings' if isinstance(instances, Texts) else 'arrays'}"
            )
        return named_inputs.batch(instances, inputs, served.lookups or {}, self.max_steps)

    @staticmethod
    def _named(served: LoadedVersion, named: NamedRows) -> EncodedRows:
        """Objects of named features encoded as the model's rows (``service.inference.tables``)."""
        spec, columns = served.metadata.input_spec, served.metadata.columns
        if columns is None:
            raise InvalidInput(
                f"expected instances as nested arrays of shape {spec.shape} (model "
                f"{served.name!r} takes {spec.kind.replace('_', ' ')}, not named features), "
                "received an object in instances[0]"
            )
        return encode(named, columns)

    def _checked(self, served: LoadedVersion, instances: Instances) -> tuple[Inputs, Features]:
        """The checked instances (``service.inference.inputs``) and the model's input batch."""
        spec = served.metadata.input_spec
        x, x32 = features(instances, spec.shape, self.max_steps)
        if spec.integral:
            what = "token ids" if spec.kind == "token_ids" else f"{spec.dtype} inputs"
            x32 = whole_numbers(x, spec.shape, spec.dtype, spec.id_range, what)
        return x, x32

    @staticmethod
    def _runtime_failed(served: LoadedVersion, exc: Exception) -> InferenceFailed:
        """Log the runtime's own error with the request id; the client gets a clear 422."""
        record = served_record.get() or {}
        request_id = record.get("request_id")
        log.warning(
            "model %r version %s failed on the input of request %s: %r",
            served.name,
            served.version,
            request_id,
            exc,
        )
        return InferenceFailed(
            f"expected instances model {served.name!r} version {served.version} can run on, "
            "received instances its runtime failed on; the server log has the runtime's "
            f"message under request id {request_id}"
        )

    # --- model control ---------------------------------------------------------------

    def _control(self, action: str) -> ModelRegistry:
        """The registry, when clients may change what it serves and it has loaded."""
        if not self.model_control:
            raise ModelControlDisabled(
                f"expected model control to be on (SERVICE_MODEL_CONTROL=true) for {action}, "
                "received a request while it is off (the default)"
            )
        if not self.registry.loaded:
            raise NotReady(self.registry.not_ready_reason())
        return self.registry

    async def reload(self, name: str, verb: str = "reloading") -> list[VersionStatus]:
        """Load ``name``'s versions now (retrying refused ones, undoing an unload)."""
        registry = self._control(f"{verb} model {name!r}")
        return await anyio.to_thread.run_sync(registry.reload, name)

    async def unload(self, name: str) -> None:
        """Stop serving every version of ``name`` until it is reloaded."""
        registry = self._control(f"unloading model {name!r}")
        await anyio.to_thread.run_sync(registry.unload, name)

    @staticmethod
    async def _logits(served: LoadedVersion, x: Features) -> Logits:
        if served.batcher is not None:
            return await served.batcher.logits(x)
        return await anyio.to_thread.run_sync(served.runtime.logits, x)

    def softmax(
        self, logits: Sequence[float] | Sequence[Sequence[float]], temperature: float
    ) -> SoftmaxResult:
        """The float64 softmax of one vector or a batch of equal-length vectors."""
        if len(logits) > self.max_batch_rows:
            raise PayloadTooLarge(
                f"expected at most {self.max_batch_rows} rows of logits, received {len(logits)}"
            )
        row = logits[0] if logits and isinstance(logits[0], Sequence) else logits
        if len(row) > self.max_values_per_row:
            raise PayloadTooLarge(
                f"expected at most {self.max_values_per_row} logits per row, received {len(row)}"
            )
        if logits and isinstance(logits[0], Sequence):
            widths = {len(row) for row in logits}  # type: ignore[arg-type]
            if len(widths) != 1:
                raise InvalidInput(
                    "expected every row of a logits batch to have the same length, "
                    f"received lengths {sorted(widths)}"
                )
            if widths == {0}:
                raise InvalidInput("expected at least one logit per row, received empty rows")
        probabilities = softmax(logits, temperature)
        return SoftmaxResult(probabilities, probabilities.argmax(axis=-1))
