"""A typed Python client for the native API, sync (``Client``) and async (``AsyncClient``).

    >>> from service.client import Client
    >>> with Client("http://127.0.0.1:8000") as client:
    ...     answer = client.predict([[15.0, 0.0]])
    ...     answer.predictions[0].label
    '0'

Answers are the service's own pydantic models (``service.protocols.schemas``). A 503 (overloaded,
or not ready yet) is retried up to ``retries`` times after the ``Retry-After`` the server
sends (capped by ``max_retry_wait``); any other error raises ``ClientError`` carrying the
status, the server's ``error`` message and its request id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel

from service.protocols.schemas import (
    ColumnarPredictResponse,
    ModelInfo,
    ModelList,
    PredictResponse,
    SoftmaxResponse,
    TopPredictResponse,
)

T = TypeVar("T", bound=BaseModel)
Rows = Sequence[Sequence[float]]
#: What ``predict`` sends, one per instance, in any form the model takes: a row of numbers,
#: a nested array (lists or a numpy array), ``{"b64": ...}`` for an image file, an object
#: of named features or named inputs, or a string for a model that takes raw text.
Instances = Sequence[Any]


def _plain(value: Any) -> Any:
    """``value`` as JSON can carry it: numpy arrays and scalars become lists and numbers."""
    if hasattr(value, "tolist"):  # a numpy array or scalar
        return value.tolist()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


class ClientError(Exception):
    """The service answered with an error."""

    def __init__(self, status: int, message: str, request_id: str | None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class _Call:
    method: Literal["GET", "POST"]
    path: str
    body: dict[str, Any] | None = None


def _predict_path(model: str | None, version: str | int | None, label: str | None) -> str:
    if model is None:
        if version is not None or label is not None:
            raise ValueError("a version or a label needs a model name")
        return "/predict"
    if version is not None and label is not None:
        raise ValueError("expected a version or a label, not both")
    if label is not None:
        return f"/models/{model}/labels/{label}/predict"
    if version is None:
        return f"/models/{model}/predict"
    return f"/models/{model}/versions/{version}/predict"


class _Base:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        max_retry_wait: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.retries = retries
        self.max_retry_wait = max_retry_wait

    @staticmethod
    def _predict_call(
        instances: Instances,
        model: str | None,
        version: str | int | None,
        calibrated: bool,
        columnar: bool,
        label: str | None = None,
        top_k: int | None = None,
    ) -> _Call:
        body: dict[str, Any] = {
            "instances": [_plain(instance) for instance in instances],
            "calibrated": calibrated,
            "format": "columnar" if columnar else "rows",
        }
        if top_k is not None:
            body["top_k"] = top_k
        return _Call("POST", _predict_path(model, version, label), body)

    @staticmethod
    def _softmax_call(logits: Sequence[float] | Rows, temperature: float) -> _Call:
        return _Call("POST", "/softmax", {"logits": logits, "temperature": temperature})

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None to stop here."""
        if response.status_code != 503 or attempt >= self.retries:
            return None
        try:
            wait = float(response.headers.get("retry-after", "1"))
        except ValueError:
            wait = 1.0
        return min(max(wait, 0.0), self.max_retry_wait)

    @staticmethod
    def _parse(response: httpx.Response, answer: type[T]) -> T:
        if response.is_success:
            return answer.model_validate_json(response.content)
        try:
            body = response.json()
            message, rid = str(body.get("error", response.text)), body.get("request_id")
        except ValueError:
            message, rid = response.text, None
        raise ClientError(response.status_code, message, rid)


class Client(_Base):
    """Blocking client; use as a context manager, or call ``close()``."""

    def __init__(self, base_url: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _send(self, call: _Call, answer: type[T]) -> T:
        attempt = 0
        while True:
            response = self._http.request(call.method, call.path, json=call.body)
            delay = self._retry_delay(response, attempt)
            if delay is None:
                return self._parse(response, answer)
            time.sleep(delay)
            attempt += 1

    def predict(
        self,
        instances: Instances,
        *,
        model: str | None = None,
        version: str | int | None = None,
        label: str | None = None,
        calibrated: bool = True,
    ) -> PredictResponse:
        """Class probabilities, one prediction per instance (in any form the model takes:
        ``Instances``), from the version named by number or ``label`` (else the served one)."""
        call = self._predict_call(instances, model, version, calibrated, False, label)
        return self._send(call, PredictResponse)

    def predict_columnar(
        self,
        instances: Instances,
        *,
        model: str | None = None,
        version: str | int | None = None,
        label: str | None = None,
        calibrated: bool = True,
    ) -> ColumnarPredictResponse:
        """Class probabilities as one array per field (compact, for large batches)."""
        call = self._predict_call(instances, model, version, calibrated, True, label)
        return self._send(call, ColumnarPredictResponse)

    def predict_top(
        self,
        instances: Instances,
        k: int,
        *,
        model: str | None = None,
        version: str | int | None = None,
        label: str | None = None,
        calibrated: bool = True,
    ) -> TopPredictResponse:
        """Each instance's ``k`` most probable classes (labels, indices, probabilities),
        most probable first, instead of the whole distribution."""
        call = self._predict_call(instances, model, version, calibrated, False, label, k)
        return self._send(call, TopPredictResponse)

    def softmax(self, logits: Sequence[float] | Rows, temperature: float = 1.0) -> SoftmaxResponse:
        """The service's float64 softmax of one vector or a batch."""
        return self._send(self._softmax_call(logits, temperature), SoftmaxResponse)

    def models(self) -> ModelList:
        """Every served model."""
        return self._send(_Call("GET", "/models"), ModelList)

    def model(self, name: str) -> ModelInfo:
        """A model's served version and its metadata."""
        return self._send(_Call("GET", f"/models/{name}"), ModelInfo)

    def ready(self) -> bool:
        """Whether the default model is loaded and warm (no retries)."""
        return self._http.get("/health/ready").status_code == 200


class AsyncClient(_Base):
    """Asyncio client; use as an async context manager, or call ``aclose()``."""

    def __init__(self, base_url: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, call: _Call, answer: type[T]) -> T:
        attempt = 0
        while True:
            response = await self._http.request(call.method, call.path, json=call.body)
            delay = self._retry_delay(response, attempt)
            if delay is None:
                return self._parse(response, answer)
            await asyncio.sleep(delay)
            attempt += 1

    async def predict(
        self,
        instances: Instances,
        *,
        model: str | None = None,
        version: str | int | None = None,
        label: str | None = None,
        calibrated: bool = True,
    ) -> PredictResponse:
        """Class probabilities, one prediction per instance (in any form the model takes:
        ``Instances``), from the version named by number or ``label`` (else the served one)."""
        call = self._predict_call(instances, model, version, calibrated, False, label)
        return await self._send(call, PredictResponse)

    async def predict_columnar(
        self,
        instances: Instances,
        *,
        model: str | None = None,
        version: str | int | None = None,
        label: str | None = None,
        calibrated: bool = True,
    ) -> ColumnarPredictResponse:
        """Class probabilities as one array per field (compact, for large batches)."""
        call = self._predict_call(instances, model, version, calibrated, True, label)
        return await self._send(call, ColumnarPredictResponse)

    async def predict_top(
        self,
        instances: Instances,
        k: int,
        *,
        model: str | None = None,
        version: str | int | None = None,
        label: str | None = None,
        calibrated: bool = True,
    ) -> TopPredictResponse:
        """Each instance's ``k`` most probable classes (labels, indices, probabilities),
        most probable first, instead of the whole distribution."""
        call = self._predict_call(instances, model, version, calibrated, False, label, k)
        return await self._send(call, TopPredictResponse)

    async def softmax(
        self, logits: Sequence[float] | Rows, temperature: float = 1.0
    ) -> SoftmaxResponse:
        """The service's float64 softmax of one vector or a batch."""
        return await self._send(self._softmax_call(logits, temperature), SoftmaxResponse)

    async def models(self) -> ModelList:
        """Every served model."""
        return await self._send(_Call("GET", "/models"), ModelList)

    async def model(self, name: str) -> ModelInfo:
        """A model's served version and its metadata."""
        return await self._send(_Call("GET", f"/models/{name}"), ModelInfo)

    async def ready(self) -> bool:
        """Whether the default model is loaded and warm (no retries)."""
        return (await self._http.get("/health/ready")).status_code == 200
