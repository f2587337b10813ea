"""Explanation bodies, shared by the native ``/models/{name}/explain`` and TF Serving's (KServe
V1's) ``:explain``: the request's fields beside the instances, and the one answer both give.

An answer holds, for each instance, its probabilities and, for each class explained (its
predicted class, or the ``classes`` asked for), the Shapley value of each feature of the
table (``features``: its named columns) for that class's probability, the class's
expected probability over the background, and how far the values are from adding up
exactly (``additivity_error``); beside them the method (``exact shapley``, or ``kernel
shap`` for a table wider than the exact limit, whose values come with their sampling
``standard_errors``), the baseline and the settings. An image model's answer holds, in
place of the attributions, each class's occlusion ``heatmap`` (the image's height x width:
each pixel how much the class's probability falls when its patch is hidden). A text's,
token ids' or a sequence's answer holds each instance's ``tokens`` and, per class, one
attribution per token (step): how much the class's probability falls when it is left out.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.dataplane import Explanation, ImageExplanation, StepExplanation
from service.inference.explain import METHOD
from service.protocols.schemas import Batch, StrictBody

CLASSES_FIELD = Field(
    default=None,
    min_length=1,
    description="The classes to explain, by name or index (default: each instance's "
    "predicted class).",
)
CALIBRATED_FIELD = Field(
    default=True,
    description="Explain the calibrated probabilities (the version's temperature applied, "
    "as /predict answers them); false: the Keras model's own.",
)


class ExplainRequest(StrictBody):
    """Instances to explain (a table model's rows or objects of named features, images,
    strings, token ids or sequences), and optionally the classes to explain."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"instances": [[15.0, 0.5]]},
                {"instances": [{"x1": 15.0, "x2": 0.5}], "classes": ["0", "1"]},
            ]
        }
    )

    instances: Batch = Field(
        description="One per instance: a row of the table's features, or an object of named "
        "features (null: missing); an image (nested arrays, or a file); a string; token ids "
        "or a sequence's steps."
    )
    classes: list[str | int] | None = CLASSES_FIELD
    calibrated: bool = CALIBRATED_FIELD


# --- the answer (documentation; the routes build it with ``body``) -------------------------


class ClassAttributions(BaseModel):
    """One class's attributions for one instance."""

    index: int = Field(description="The class's index in class_names.")
    label: str = Field(description="The class's name.")
    probability: float = Field(description="The instance's probability of the class.")
    expected_value: float | None = Field(
        default=None,
        description="Tables: the class's probability averaged over the background: the "
        "baseline the attributions start from.",
    )
    attributions: list[float] | None = Field(
        default=None,
        description="Tables: one per feature (in 'features' order): its Shapley value for "
        "the class's probability. They sum to probability - expected_value. Text, token ids "
        "and sequences: one per token (step), the class's probability minus its probability "
        "with the token left out.",
    )
    additivity_error: float | None = Field(
        default=None,
        description="Tables: |sum(attributions) - (probability - expected_value)|: float64 "
        "rounding.",
    )
    heatmap: list[list[float]] | None = Field(
        default=None,
        description="Images (occlusion): the image's height x width, each pixel the fall "
        "of the class's probability when the patch holding it is set to the baseline.",
    )
    standard_errors: list[float] | None = Field(
        default=None,
        description="kernel shap only: one per feature, its attribution's sampling standard "
        "error (the delta method over the sampled pairs of coalitions): the exact Shapley "
        "value lies within 2 of them about 95% of the time.",
    )


class InstanceExplanation(BaseModel):
    """One instance: its probabilities and the classes explained."""

    probabilities: list[float]
    argmax: int
    label: str
    tokens: list[str | int] | None = Field(
        default=None,
        description="Text: its tokens as the model's layer cuts it (standardized); token "
        "ids: the ids. One attribution each.",
    )
    model_rows: int | None = Field(
        default=None,
        description="Text, token ids, sequences: rows the model scored for the instance "
        "(tokens + 1; padding is not scored).",
    )
    classes: list[ClassAttributions]


class Baseline(BaseModel):
    """What a feature left out of a coalition is replaced with."""

    kind: str = Field(
        description="kmeans or kmedoids (the weighted training summary saved with the "
        "version), training_mean, or zeros (a version that records neither); removed (a "
        "text's token left out), padding (a token id set to 0)."
    )
    description: str
    points: int | None = Field(
        default=None, description="Tables: background points, each scored with every coalition."
    )
    value: float | None = Field(
        default=None,
        description="Images: the value of a hidden patch's pixels; token ids and sequences: "
        "of a hidden id or step.",
    )


class ExplainSettings(BaseModel):
    """How the values were computed."""

    output: str = Field(description="What is attributed: the class probability.")
    calibrated: bool
    features: int | None = Field(
        default=None, description="Tables: the players, the table's features (named columns)."
    )
    coalitions: int | None = Field(
        default=None,
        description="Tables: coalitions valued per instance: exact, 2^features, every one; "
        "kernel shap, samples + 2 (the empty and the full coalition).",
    )
    model_rows_per_instance: int = Field(
        description="Tables: coalitions x background points; images: patches + 1; text, "
        "token ids and sequences: tokens + 1, the most of any instance."
    )
    patch: int | None = Field(
        default=None, description="Images: the patches' side in pixels (SERVICE_EXPLAIN_PATCH)."
    )
    patches: int | None = Field(default=None, description="Images: the patches hidden in turn.")
    samples: int | None = Field(
        default=None,
        description="kernel shap only: the budget of coalitions regressed over "
        "(SERVICE_EXPLAIN_SAMPLES, at least 4 x features), whole sizes enumerated while it "
        "covers them, the rest drawn in complementary pairs seeded by the instance.",
    )
    occluded: str | None = Field(
        default=None,
        description="Text, token ids and sequences: 'leave one token out' or 'leave one step out'.",
    )
    max_tokens: int | None = Field(
        default=None,
        description="Text, token ids and sequences: the most tokens (steps) an instance may "
        "have (SERVICE_EXPLAIN_MAX_TOKENS).",
    )


class ExplainResponse(BaseModel):
    """Shapley values of each instance's class probabilities (exact, or KernelSHAP's)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "blobs",
                    "version": "1",
                    "method": METHOD,
                    "baseline": {
                        "kind": "kmeans",
                        "description": "10 weighted kmeans points summarising the 750 "
                        "training rows",
                        "points": 10,
                    },
                    "settings": {
                        "output": "probability",
                        "calibrated": True,
                        "features": 2,
                        "coalitions": 4,
                        "model_rows_per_instance": 40,
                    },
                    "features": ["x1", "x2"],
                    "explanations": [
                        {
                            "probabilities": [0.0007, 0.9986, 0.0004, 0.0003],
                            "argmax": 1,
                            "label": "1",
                            "classes": [
                                {
                                    "index": 1,
                                    "label": "1",
                                    "probability": 0.9986,
                                    "expected_value": 0.2501,
                                    "attributions": [0.4012, 0.3473],
                                    "additivity_error": 1.1e-16,
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    )

    model: str
    version: str
    method: str = Field(
        description='"exact shapley": all coalitions enumerated; "kernel shap": a table '
        "wider than SERVICE_EXPLAIN_MAX_FEATURES, a weighted regression over a sample; "
        "\"occlusion\": an image's patches, or a text's tokens (a sequence's steps), "
        "hidden one at a time."
    )
    baseline: Baseline
    settings: ExplainSettings
    features: list[str] | None = Field(
        default=None, description="Tables: the features attributed to, in order."
    )
    explanations: list[InstanceExplanation]


def body(result: Explanation | ImageExplanation | StepExplanation) -> dict[str, Any]:
    """The answer's JSON for an explanation."""
    if isinstance(result, ImageExplanation):
        return image_body(result)
    if isinstance(result, StepExplanation):
        return steps_body(result)
    names = result.model.metadata.class_names
    instances = []
    for attributions, classes in zip(result.attributions, result.classes, strict=True):
        probabilities = attributions.prediction
        error = attributions.additivity_error
        spread = attributions.standard_errors
        best = int(probabilities.argmax())
        explained = []
        for k in classes:
            one: dict[str, Any] = {
                "index": int(k),
                "label": names[k],
                "probability": float(probabilities[k]),
                "expected_value": float(attributions.expected[k]),
                "attributions": attributions.values[:, k].tolist(),
                "additivity_error": float(error[k]),
            }
            if spread is not None:
                one["standard_errors"] = spread[:, k].tolist()
            explained.append(one)
        instances.append(
            {
                "probabilities": probabilities.tolist(),
                "argmax": best,
                "label": names[best],
                "classes": explained,
            }
        )
    points = len(result.background.weights)
    settings: dict[str, Any] = {
        "output": "probability",
        "calibrated": result.calibrated,
        "features": len(result.players),
        "coalitions": result.model_rows // points,
        "model_rows_per_instance": result.model_rows,
    }
    if result.samples is not None:
        settings["samples"] = result.samples
    return {
        "model": result.model.name,
        "version": str(result.model.version),
        "method": result.method,
        "baseline": {
            "kind": result.baseline,
            "description": result.background.description,
            "points": points,
        },
        "settings": settings,
        "features": result.players,
        "explanations": instances,
    }


def image_body(result: ImageExplanation) -> dict[str, Any]:
    """The answer's JSON for an image model's occlusion heat maps."""
    names = result.model.metadata.class_names
    instances = []
    for maps, classes in zip(result.heat_maps, result.classes, strict=True):
        probabilities = maps.prediction
        best = int(probabilities.argmax())
        instances.append(
            {
                "probabilities": probabilities.tolist(),
                "argmax": best,
                "label": names[best],
                "classes": [
                    {
                        "index": int(k),
                        "label": names[k],
                        "probability": float(probabilities[k]),
                        "heatmap": maps.maps[:, :, k].tolist(),
                    }
                    for k in classes
                ],
            }
        )
    return {
        "model": result.model.name,
        "version": str(result.model.version),
        "method": result.method,
        "baseline": {
            "kind": result.baseline,
            "description": result.baseline_description,
            "value": result.baseline_value,
        },
        "settings": {
            "output": "probability",
            "calibrated": result.calibrated,
            "patch": result.patch,
            "patches": result.model_rows - 1,
            "model_rows_per_instance": result.model_rows,
        },
        "explanations": instances,
    }


def steps_body(result: StepExplanation) -> dict[str, Any]:
    """The answer's JSON for a text's, token ids' or a sequence's leave-one-out attributions."""
    names = result.model.metadata.class_names
    instances = []
    for i, (attributions, classes) in enumerate(
        zip(result.attributions, result.classes, strict=True)
    ):
        probabilities = attributions.prediction
        best = int(probabilities.argmax())
        instance: dict[str, Any] = {
            "probabilities": probabilities.tolist(),
            "argmax": best,
            "label": names[best],
        }
        if result.tokens is not None:
            instance["tokens"] = result.tokens[i]
        instance["model_rows"] = attributions.model_rows
        instance["classes"] = [
            {
                "index": int(k),
                "label": names[k],
                "probability": float(probabilities[k]),
                "attributions": attributions.values[:, k].tolist(),
            }
            for k in classes
        ]
        instances.append(instance)
    baseline: dict[str, Any] = {
        "kind": result.baseline,
        "description": result.baseline_description,
    }
    if result.baseline_value is not None:
        baseline["value"] = result.baseline_value
    return {
        "model": result.model.name,
        "version": str(result.model.version),
        "method": result.method,
        "baseline": baseline,
        "settings": {
            "output": "probability",
            "calibrated": result.calibrated,
            "occluded": result.occluded,
            "max_tokens": result.max_tokens,
            "model_rows_per_instance": max(a.model_rows for a in result.attributions),
        },
        "explanations": instances,
    }
