"""HTTP endpoints of the native API. Thin: parse, call the data plane, shape the answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.dataplane import DataPlane, ScoredBatch, TopClasses
from service.http import bodies
from service.http.bodies import openapi_body
from service.http.responses import JSONResponse
from service.http.routing import route_classes
from service.http.state import dataplane
from service.protocols import explanations
from service.protocols.explanations import ExplainRequest, ExplainResponse
from service.protocols.schemas import (
    ColumnarPredictResponse,
    FeedbackRequest,
    FeedbackResponse,
    Health,
    ModelInfo,
    ModelList,
    MonitorResponse,
    PredictRequest,
    PredictResponse,
    ReloadResponse,
    SoftmaxRequest,
    SoftmaxResponse,
    TopColumnarPredictResponse,
    TopPredictResponse,
    core_instances,
    error_responses,
)
from service.ui import playground

PREDICT_ERRORS = error_responses(400, 404, 413, 422, 503)

#: The native API answers input it cannot take with 422 (400 is for bodies that are not JSON).
Route, HotRoute = route_classes(invalid_input_status=422)
router = APIRouter(route_class=Route)
#: The hot endpoints: see service.http.routing.DirectRoute.
direct = APIRouter(route_class=HotRoute)


def _top_columns(top: TopClasses) -> dict[str, Any]:
    return {
        "indices": top.indices,
        "labels": top.labels.tolist(),
        "probabilities": top.probabilities,
    }


def _top_rows(top: TopClasses) -> list[dict[str, Any]]:
    rows = zip(top.indices.tolist(), top.labels.tolist(), top.probabilities.tolist(), strict=True)
    return [{"indices": i, "labels": labels, "probabilities": p} for i, labels, p in rows]


def _predict_body(result: ScoredBatch, fmt: str) -> dict[str, Any]:
    """The answer's JSON: each instance's whole distribution (``probabilities``), or with
    top_k its most probable classes (``top_k``), in rows or columns."""
    head = {"model": result.model.name, "version": str(result.model.version)}
    top = result.top
    if fmt == "columnar":
        scores = (
            {"probabilities": result.probabilities} if top is None else {"top_k": _top_columns(top)}
        )
        return {
            **head,
            **scores,
            "argmax": result.argmax,
            "labels": result.labels.tolist(),
            "entropy": result.entropy,
            "ood": result.ood,
            "ood_distance": result.ood_distance,
            **({"unseen": result.unseen} if result.unseen is not None else {}),
        }
    distributions: Sequence[Any]
    if top is None:
        rows = result.scores.lists()
        key, distributions = "probabilities", rows.probabilities
        argmax, entropy, distances = rows.argmax, rows.entropy, rows.ood_distance
    else:  # only the top k are sent: the whole distributions are never made lists
        key, distributions = "top_k", _top_rows(top)
        argmax, entropy = result.argmax.tolist(), result.entropy.tolist()
        far = result.ood_distance
        distances = None if far is None else far.tolist()
    names = result.model.metadata.class_names
    n = len(argmax)
    detector = result.model.metadata.ood_detector
    flags: Sequence[bool | None] = [None] * n
    shown: Sequence[float | None] = [None] * n
    if distances is not None and detector is not None:
        flags = [d > detector.threshold for d in distances]  # detector.flags, on a list
        shown = distances
    predictions: list[dict[str, Any]] = [
        {
            key: p,
            "argmax": k,
            "label": names[k],
            "entropy": h,
            "ood": flag,
            "ood_distance": distance,
        }
        for p, k, h, flag, distance in zip(
            distributions, argmax, entropy, flags, shown, strict=True
        )
    ]
    if result.unseen is not None:
        for prediction, unseen in zip(predictions, result.unseen, strict=True):
            prediction["unseen"] = unseen
    return {**head, "predictions": predictions}


# The predict and softmax endpoints are DirectRoutes: they take the Request and their
# path parameters, and parse the body in one pass with the pydantic model that
# documents it (service.http.bodies).


async def _predict(
    request: Request, model: str | None, version: str | None, label: str | None = None
) -> JSONResponse:
    plane = dataplane(request)
    if bodies.is_image(request):
        images = await bodies.image(request)
        result = await plane.predict(images, model=model, version=version, label=label)
        return JSONResponse(_predict_body(result, "rows"))
    body = await bodies.read(request, PredictRequest, plane.max_json_depth)
    result = await plane.predict(
        core_instances(body.instances),
        model=model,
        version=version,
        calibrated=body.calibrated,
        top=body.top_k,
        label=label,
    )
    return JSONResponse(_predict_body(result, body.format))


PREDICT = {
    "response_model": PredictResponse
    | ColumnarPredictResponse
    | TopPredictResponse
    | TopColumnarPredictResponse,
    "responses": PREDICT_ERRORS,
    "tags": ["predict"],
    "openapi_extra": openapi_body(PredictRequest),
}


@direct.post("/predict", **PREDICT)  # type: ignore[arg-type]
async def predict(request: Request) -> JSONResponse:
    """Class probabilities for each instance, from the default model's newest version.

    For an image model, the body may also be one PNG or JPEG file (``Content-Type:
    image/png`` or ``image/jpeg``): the answer is for that one image.
    """
    return await _predict(request, None, None)


@direct.post("/models/{name}/predict", **PREDICT)  # type: ignore[arg-type]
async def predict_model(name: str, request: Request) -> JSONResponse:
    """Class probabilities from the newest version of the named model.

    For an image model, the body may also be one PNG or JPEG file (``Content-Type:
    image/png`` or ``image/jpeg``): the answer is for that one image.
    """
    return await _predict(request, name, None)


@direct.post("/models/{name}/versions/{version}/predict", **PREDICT)  # type: ignore[arg-type]
async def predict_version(name: str, version: str, request: Request) -> JSONResponse:
    """Class probabilities from one version of the named model.

    For an image model, the body may also be one PNG or JPEG file (``Content-Type:
    image/png`` or ``image/jpeg``): the answer is for that one image.
    """
    return await _predict(request, name, version)


@direct.post("/models/{name}/labels/{label}/predict", **PREDICT)  # type: ignore[arg-type]
async def predict_label(name: str, label: str, request: Request) -> JSONResponse:
    """Class probabilities from the version the label names (``serving.json``'s
    ``version_labels``); 404 naming the labels there are for an unknown one."""
    return await _predict(request, name, None, label)


async def _explain(request: Request, model: str, version: str | None) -> JSONResponse:
    plane = dataplane(request)
    body = await bodies.read(request, ExplainRequest, plane.max_json_depth)
    result = await plane.explain(
        core_instances(body.instances),
        model=model,
        version=version,
        classes=body.classes,
        calibrated=body.calibrated,
    )
    return JSONResponse(explanations.body(result))


EXPLAIN = {
    "response_model": ExplainResponse,
    "responses": PREDICT_ERRORS,
    "tags": ["explain"],
    "openapi_extra": openapi_body(ExplainRequest),
}


@direct.post("/models/{name}/explain", **EXPLAIN)  # type: ignore[arg-type]
async def explain_model(name: str, request: Request) -> JSONResponse:
    """Shapley values of each instance's class probabilities, per feature of a table
    model, from its newest version.

    Each feature's attribution to the predicted class (or to each of ``classes``),
    measured against the background saved with the version (its training rows' weighted
    k-means summary; else their mean; else zeros, as ``baseline`` says): exact up to
    ``SERVICE_EXPLAIN_MAX_FEATURES`` features, KernelSHAP's estimate with its standard
    errors above; for an image model, each class's occlusion heat map (the image's size);
    for text, token ids or a sequence, each token's (step's) attribution, the class's
    probability minus its probability with the token left out.
    413 for more instances than ``SERVICE_EXPLAIN_MAX_INSTANCES``; 422 for a model of
    several inputs, a table wider than ``SERVICE_EXPLAIN_MAX_SAMPLED_FEATURES``, an image
    of more patches than ``SERVICE_EXPLAIN_MAX_PATCHES``, an instance of more tokens than
    ``SERVICE_EXPLAIN_MAX_TOKENS``, or an unknown class.
    """
    return await _explain(request, name, None)


@direct.post("/models/{name}/versions/{version}/explain", **EXPLAIN)  # type: ignore[arg-type]
async def explain_version(name: str, version: str, request: Request) -> JSONResponse:
    """Shapley values of each instance's class probabilities, from one version."""
    return await _explain(request, name, version)


@direct.post(
    "/softmax",
    response_model=SoftmaxResponse,
    responses=error_responses(400, 422),
    tags=["softmax"],
    openapi_extra=openapi_body(SoftmaxRequest),
)
async def softmax(request: Request) -> JSONResponse:
    """softmax(logits / temperature) in float64, numerically stable for any finite logits."""
    plane = dataplane(request)
    body = await bodies.read(request, SoftmaxRequest, plane.max_json_depth)
    result = plane.softmax(body.logits, body.temperature)
    argmax = result.argmax.tolist()
    return JSONResponse({"probabilities": result.probabilities, "argmax": argmax})


@router.get("/health/live", response_model=Health, tags=["health"])
async def live() -> JSONResponse:
    """200 while the process can answer."""
    return JSONResponse({"status": "alive"})


#: ``GET /`` answers by the request's ``Accept``: caches must keep the two answers apart.
VARY_ACCEPT = {"Vary": "Accept"}


@router.get(
    "/",
    response_model=Health,
    responses={
        200: {
            "description": 'Live: {"status": "alive"}. To a client whose Accept names '
            "text/html (a browser), the playground page instead.",
            "content": {
                "text/html": {"schema": {"type": "string"}, "example": "<!doctype html>..."}
            },
        }
    },
    tags=["health"],
)
async def root(request: Request) -> Response:
    """200 while the process can answer, as ``/health/live``: KServe's V1 liveness.

    A browser (whose ``Accept`` names ``text/html``) gets the playground page instead;
    any other client (``*/*``, ``application/json``, no ``Accept``) gets the JSON.
    """
    if playground.wants_page(request.headers.get("accept", "")):
        return playground.page(VARY_ACCEPT)
    return JSONResponse({"status": "alive"}, headers=VARY_ACCEPT)


@router.get("/health/ready", response_model=Health, responses=error_responses(503), tags=["health"])
async def ready(request: Request) -> JSONResponse:
    """200 once the default model is loaded and warmed up (``/predict`` works); 503 before."""
    dataplane(request).check_ready()
    return JSONResponse({"status": "ready"})


@router.get("/models", response_model=ModelList, responses=error_responses(503), tags=["models"])
async def list_models(request: Request) -> JSONResponse:
    """Every served model with its versions and the version served by default."""
    models = [
        {
            "name": model.name,
            "versions": [str(v) for v in model.versions],
            "default_version": str(model.default_version),
        }
        for model in dataplane(request).models()
    ]
    return JSONResponse({"models": models})


def _info(plane: DataPlane, name: str, version: str | None) -> JSONResponse:
    served = plane.resolve(name, version)
    meta = served.metadata
    body = meta.model_dump(mode="json", exclude={"files", "format_version"})
    body.update(
        version=str(meta.version),
        versions=[str(v) for v in plane.versions(name)],
        runtime=served.runtime_name,
        rollout=plane.rollout(name),
    )
    return JSONResponse(body)


@router.get(
    "/models/{name}", response_model=ModelInfo, responses=error_responses(404, 503), tags=["models"]
)
async def model_info(name: str, request: Request) -> JSONResponse:
    """The served (newest) version's metadata: features, classes, metrics, training."""
    return _info(dataplane(request), name, None)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelInfo,
    responses=error_responses(404, 503),
    tags=["models"],
)
async def version_info(name: str, version: str, request: Request) -> JSONResponse:
    """One version's metadata."""
    return _info(dataplane(request), name, version)


@router.post(
    "/models/{name}/feedback",
    response_model=FeedbackResponse,
    responses=error_responses(400, 403, 404, 422, 503),
    tags=["models"],
    openapi_extra=openapi_body(FeedbackRequest),
)
async def feedback(name: str, request: Request) -> JSONResponse:
    """The true labels of an earlier prediction of this model, by the request id it was
    answered with: joined with that answer into the version's live accuracy, log loss and
    calibration error (``GET /models/{name}/monitor``). 404 for a request id the service
    no longer holds (forgotten, expired, labelled already) or never answered."""
    plane = dataplane(request)
    body = await bodies.read(request, FeedbackRequest, plane.max_json_depth)
    return JSONResponse(plane.label(name, body.request_id, body.labels))


@router.get(
    "/models/{name}/monitor",
    response_model=MonitorResponse,
    responses=error_responses(404, 503),
    tags=["models"],
)
async def monitor(name: str, request: Request) -> JSONResponse:
    """Live drift of the served version: its rolling window of answers against its
    training references (PSI per numeric feature and of the predicted-class mix, mean
    entropy, OOD rate)."""
    return JSONResponse(dataplane(request).monitor_summary(name))


@router.get(
    "/models/{name}/versions/{version}/monitor",
    response_model=MonitorResponse,
    responses=error_responses(404, 503),
    tags=["models"],
)
async def version_monitor(name: str, version: str, request: Request) -> JSONResponse:
    """Live drift of one version."""
    return JSONResponse(dataplane(request).monitor_summary(name, version))


# --- model control: off unless SERVICE_MODEL_CONTROL=true (403) ---------------------------


@router.post(
    "/models/{name}/reload",
    response_model=ReloadResponse,
    responses=error_responses(403, 404, 409, 503),
    tags=["models"],
)
async def reload(name: str, request: Request) -> JSONResponse:
    """Load the model's new versions now (retrying refused ones) and swap them in.

    For servers with polling off, or to retry a refused version at once: new versions
    are loaded, verified and warmed up while the current one keeps answering, then
    swapped in; 409 when a version the policy wants is refused (the previous one keeps
    serving). Off unless ``SERVICE_MODEL_CONTROL=true`` (403).
    """
    plane = dataplane(request)
    statuses = await plane.reload(name)
    versions = [
        {"version": str(s.version), "state": s.state.value, "error": s.error} for s in statuses
    ]
    return JSONResponse({"name": name, "versions": versions})
