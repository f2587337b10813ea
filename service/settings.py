"""Service settings: documented data, read once from flags and ``SERVICE_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.repository.policy import VersionPolicy


class ModelBatching(BaseModel):
    """Batching for one model; unset fields take the global settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batching: Literal["auto", "on", "off"] | None = None
    """Whether to batch this model's requests."""

    batch_max_size: int | None = Field(default=None, ge=1)
    """Most rows in one batch."""

    batch_max_wait_ms: float | None = Field(default=None, ge=0)
    """Longest a request waits for others to join its batch."""


class Settings(BaseSettings):
    """Everything the service can be told; each field reads ``SERVICE_<FIELD>``."""

    # The docstrings under the fields document them (docs/configuration.md is generated
    # from them by tests/settings_table.py); pydantic's use_attribute_docstrings would
    # read this file's source at every start, a fifth of the service's own import time.
    model_config = SettingsConfigDict(env_prefix="SERVICE_", frozen=True, extra="forbid")

    model_repository: Path = Path("models")
    """Directory holding ``<name>/<version>/`` model versions."""

    host: str = "127.0.0.1"
    """Interface to listen on; ``0.0.0.0`` in containers."""

    port: int = Field(default=8000, ge=0, le=65535)
    """TCP port to listen on (0 picks a free one)."""

    grpc_port: int = Field(default=8001, ge=0, le=65535)
    """TCP port of the gRPC listener (the Open Inference Protocol's
    ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health``), on the same host
    and in the same processes as HTTP; Triton's default, 8001. 0 turns gRPC off."""

    grpc_max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=4 * 1024 * 1024)
    """Largest gRPC message received or sent; a larger one is refused with
    RESOURCE_EXHAUSTED. gRPC's own default, 4 MiB, is too small for image batches."""

    workers: int = Field(default=1, ge=1, le=64)
    """Worker processes; each loads the repository on its own. One per core is a good start."""

    default_model: str | None = None
    """Model served at ``/predict``; may be left unset when the repository holds exactly one."""

    max_batch_rows: int = Field(default=100_000, ge=1)
    """Most instances accepted in one request; more is answered with 413."""

    batching: Literal["auto", "on", "off"] = "auto"
    """Run concurrent requests as one model call: ``auto`` batches runtimes whose per-call
    cost dominates (Keras/TensorFlow) and not LiteRT, whose calls take microseconds."""

    batch_max_size: int = Field(default=64, ge=1)
    """Most rows in one batch (a larger request runs alone)."""

    batch_max_wait_ms: float = Field(default=2.0, ge=0)
    """Longest a request waits for others to fill its batch; only waited for under load."""

    model_batching: dict[str, ModelBatching] = Field(default_factory=dict)
    """Per-model overrides, as JSON: ``{"blobs": {"batching": "on", "batch_max_size": 32}}``."""

    access_log: bool = True
    """One JSON line per request (request id, path, model, version, status, rows, latency)."""

    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    """Logging threshold for the service and uvicorn."""

    timeout_graceful_shutdown: float = Field(default=8.0, ge=0)
    """Seconds in-flight requests get to finish after SIGTERM; below Docker's 10 s and
    Kubernetes' 30 s defaults, so the process exits 0 before it would be killed."""

    # --- limits and overload -------------------------------------------------------------

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest request body; larger is answered 413 before the body is read (from its
    Content-Length) or as soon as the streamed bytes pass the limit."""

    max_values_per_row: int = Field(default=10_000, ge=1)
    """Most numbers in one row of ``logits`` (413 beyond); a row of ``instances`` has the
    model's own width, and any other is refused (422)."""

    max_image_pixels: int = Field(default=16_777_216, ge=1, le=89_478_485)
    """Most pixels (width x height) an image file sent to an image model may declare
    (413 beyond). Checked from the file's header before anything is decoded, so a small
    file declaring a huge image (a decompression bomb) costs nothing. The default is
    4096 x 4096; the ceiling is Pillow's own limit."""

    max_steps: int = Field(default=4096, ge=1)
    """Most steps one instance may have for a model that takes sequences or token ids of
    any length (413 beyond). Such a model runs each instance at its own length, so its
    cost grows with the steps."""

    max_json_depth: int = Field(default=32, ge=2)
    """Deepest nesting of arrays and objects in a request body (400 beyond)."""

    explain_max_instances: int = Field(default=16, ge=1)
    """Most instances one explanation request (``/models/{name}/explain``, ``:explain``)
    may ask about (413 beyond): each costs the model coalitions x background rows."""

    explain_max_features: int = Field(default=12, ge=1, le=20)
    """Most features (named columns) of a table whose Shapley values are computed exactly,
    by enumerating all 2^features coalitions (4096 at 12, times the background's 10
    points: one model call of about 41,000 rows per instance); a wider table is
    explained by KernelSHAP (``SERVICE_EXPLAIN_SAMPLES``)."""

    explain_samples: int = Field(default=2048, ge=16, le=65536)
    """Coalitions KernelSHAP values for a table wider than ``SERVICE_EXPLAIN_MAX_FEATURES``
    (at least 4 x features are used): one model call of (samples + 2) x background
    points rows per instance (20,500 at 2048 and 10 points). More samples, smaller
    standard errors (which fall as 1 / sqrt(samples)); the answer states both."""

    explain_max_sampled_features: int = Field(default=200, ge=1, le=10_000)
    """Most features (named columns) of a table explained at all, by KernelSHAP above
    ``SERVICE_EXPLAIN_MAX_FEATURES``; a wider table's explanation is refused with 422."""

    explain_patch: int = Field(default=8, ge=1)
    """Side in pixels of the square patches an image model's explanation hides one at a
    time (occlusion): a 96 x 96 image has 144 patches of 8, scored with the image in one
    model call of 145 images."""

    explain_max_patches: int = Field(default=256, ge=1)
    """Most patches of an image explained by occlusion (each an image the model scores);
    an image of more (its sides over ``SERVICE_EXPLAIN_PATCH``, rounded up, multiplied) is
    refused with 422."""

    explain_max_tokens: int = Field(default=512, ge=1)
    """Most tokens of a text (token ids, steps of a sequence) explained by leaving each out
    in turn: one model call of tokens + 1 rows per instance (each as long as the text, for
    a model of any length); an instance of more is refused with 422."""

    monitor_window: int = Field(default=1000, ge=0)
    """Rows of each model version's rolling window for live drift (``GET
    /models/{name}/monitor``, the ``softmax_drift_*`` and ``softmax_window_*`` gauges);
    0 turns monitoring off."""

    feedback_max_bytes: int = Field(default=0, ge=0)
    """Memory for the answers kept so that a true label reported later (``POST
    /models/{name}/feedback``) can be joined with its answer: the newest answers, each
    counted as its float32 probabilities plus 400 bytes (64 MiB, 67108864, holds about
    160,000 one-row answers of a 4-class model). 0, the default, turns feedback off:
    keeping every answer costs a one-row request about 3 µs of CPU and the memory."""

    feedback_ttl_seconds: float = Field(default=86_400.0, gt=0)
    """How long an answer waits for its true label; older ones are forgotten (404)."""

    prediction_log_dir: Path | None = None
    """Directory of the prediction log: a sample of the requests (their inputs, answers,
    model, version, request id and time) and every reported label, as JSON lines
    (``predictions-<pid>.jsonl``), written off the response path; unset: no log."""

    prediction_log_sample: float = Field(default=1.0, gt=0.0, le=1.0)
    """Share of the answered requests the prediction log keeps."""

    prediction_log_max_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    """Size at which a prediction log file is rotated."""

    prediction_log_backups: int = Field(default=4, ge=1)
    """Rotated prediction log files kept per process; the oldest is deleted beyond. With
    ``SERVICE_PREDICTION_LOG_MAX_BYTES`` it caps what each process writes."""

    shadow_max_pending_rows: int = Field(default=4096, ge=1)
    """Most rows waiting for a shadow version (``serving.json``'s ``shadow``); beyond,
    offers are shed and counted, so a slow shadow never slows the live answers."""

    header_timeout: float = Field(default=10.0, gt=0)
    """Seconds a client may take to send its request line and headers; a connection
    whose request head stalls longer is closed (slowloris)."""

    body_timeout: float = Field(default=30.0, gt=0)
    """Seconds a client may take to send its whole body before it is answered 408."""

    timeout_keep_alive: int = Field(default=75, ge=1)
    """Seconds an idle keep-alive connection stays open: longer than the idle timeout of
    common proxies and load balancers (60 s), so they, not we, close idle connections."""

    max_inflight: int = Field(default=64, ge=1)
    """Inference requests one worker handles at once; more are answered 503 with
    ``Retry-After`` at once instead of queueing without bound. A request whose client has
    left stops counting at once."""

    retry_after: int = Field(default=1, ge=1)
    """Seconds a client is told to wait (``Retry-After``) when overloaded or not ready."""

    # --- access --------------------------------------------------------------------------

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """API keys, comma-separated; when set, every request but those to the open paths must
    carry one as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (401 otherwise)."""

    open_paths: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "/health/live",
            "/health/ready",
            "/v2/health/live",
            "/v2/health/ready",
            "/metrics",
            "/",
            "/playground/static/*",
            "/docs",
            "/docs/static/*",
            "/openapi.json",
        ]
    )
    """Paths that need no API key even when keys are set (comma-separated; a trailing ``*``
    matches any path starting with what precedes it). By default: health, metrics, and
    the pages a browser opens (the playground, ``/docs`` and the OpenAPI document they
    read), which hold no model data and which a browser cannot open with a key; every
    call that touches a model needs one (the playground asks for it)."""

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed by CORS (comma-separated, ``*`` for any); empty: CORS off."""

    # --- model lifecycle -----------------------------------------------------------------

    version_policy: str = "latest"
    """Versions of each model to serve, as TF Serving's model_version_policy: ``latest``
    (the newest loadable one), ``latest:N`` (the N newest), ``all``, or ``specific:1,3``."""

    model_control: bool = False
    """Allow clients to change what is served: ``POST /models/{name}/reload`` and the V2
    repository ``load``/``unload``. Off (403), as Triton's ``--model-control-mode=none``:
    an anonymous client must not be able to unload the models. When on and API keys are
    set, these paths need a key like every other one."""

    poll_interval: float = Field(default=2.0, ge=0)
    """Seconds between scans of the model repository for new, removed or repaired versions
    (each worker scans on its own); 0: only at start, and on ``POST /models/{name}/reload``
    where model control is on."""

    @field_validator("version_policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        return str(VersionPolicy.parse(value))

    @field_validator("api_keys", "open_paths", "cors_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _strong_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            if len(key.get_secret_value()) < 16:
                raise ValueError("expected API keys of at least 16 characters")
        return value

    @field_validator("model_repository")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()
