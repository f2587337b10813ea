"""Service settings: documented data, read once from flags and ``SERVICE_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    model_config = SettingsConfigDict(
        env_prefix="SERVICE_", frozen=True, extra="forbid", use_attribute_docstrings=True
    )

    model_repository: Path = Path("models")
    """Directory holding ``<name>/<version>/`` model versions."""

    host: str = "127.0.0.1"
    """Interface to listen on; ``0.0.0.0`` in containers."""

    port: int = Field(default=8000, ge=0, le=65535)
    """TCP port to listen on (0 picks a free one)."""

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

    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    """Logging threshold for the service and uvicorn."""

    timeout_graceful_shutdown: float = Field(default=10.0, ge=0)
    """Seconds to let in-flight requests finish after SIGTERM."""

    @field_validator("model_repository")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()
