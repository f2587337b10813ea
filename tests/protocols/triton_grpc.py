"""``tritonclient.grpc`` calls, run in a process of their own by tests/protocols/test_grpc.py.

tritonclient.grpc and KServe's SDK both register the protobuf messages of package
``inference`` in protobuf's default descriptor pool, which refuses a second definition
of a name: the test process imports KServe's SDK (tests/protocols/test_kserve_client.py),
so tritonclient.grpc is imported only here, in a worker process, and these functions
take and return plain values (numpy arrays, dicts, strings).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt

Outcome = dict[str, Any]


def _error(exc: Exception) -> Outcome:
    """tritonclient's error as its status code's name and message."""
    status = str(getattr(exc, "status", lambda: None)() or "")
    message = getattr(exc, "message", lambda: str(exc))()
    return {"code": status.removeprefix("StatusCode."), "message": message}


def facts(url: str, model: str) -> Outcome:
    """Liveness, readiness and metadata, as tritonclient reads them (as JSON)."""
    import tritonclient.grpc as triton

    with triton.InferenceServerClient(url) as client:
        return {
            "live": client.is_server_live(),
            "ready": client.is_server_ready(),
            "model_ready": client.is_model_ready(model),
            "version_ready": client.is_model_ready(model, "1"),
            "absent_version_ready": client.is_model_ready(model, "99"),
            "unknown_ready": client.is_model_ready("nope"),
            "server": client.get_server_metadata(as_json=True),
            "model": client.get_model_metadata(model, as_json=True),
        }


def _inputs(x: npt.NDArray[Any], datatype: str) -> list[Any]:
    import tritonclient.grpc as triton

    tensor = triton.InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return [tensor]


def infer(
    url: str,
    model: str,
    x: npt.NDArray[Any],
    datatype: str,
    *,
    class_count: int = 0,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Outcome:
    """``client.infer`` with tritonclient's defaults (raw contents both ways): each output
    as an array, or the error."""
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    outputs = [
        triton.InferRequestedOutput(name, class_count=class_count)
        for name in ("probabilities", "logits")
    ]
    with triton.InferenceServerClient(url) as client:
        try:
            result = client.infer(
                model,
                _inputs(x, datatype),
                outputs=outputs,
                request_id="r-1",
                headers=headers,
                client_timeout=timeout,
            )
        except InferenceServerException as exc:
            return _error(exc)
        response = result.get_response()
        return {
            "model": response.model_name,
            "version": response.model_version,
            "id": response.id,
            "datatypes": [o.datatype for o in response.outputs],
            "probabilities": result.as_numpy("probabilities"),
            "logits": result.as_numpy("logits"),
        }


def infer_files(url: str, model: str, files: list[bytes]) -> Outcome:
    """Image files as a BYTES input ``[N]`` (raw: each a 4-byte length and its bytes)."""
    import tritonclient.grpc as triton

    tensor = triton.InferInput("image", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_))
    with triton.InferenceServerClient(url) as client:
        result = client.infer(model, [tensor])
    return {"probabilities": result.as_numpy("probabilities")}


def infer_async(url: str, model: str, x: npt.NDArray[Any], datatype: str) -> Outcome:
    """The asyncio client (``tritonclient.grpc.aio``), several calls at once."""
    import tritonclient.grpc.aio as triton_aio

    async def main() -> list[npt.NDArray[Any]]:
        async with triton_aio.InferenceServerClient(url) as client:
            tensor = triton_aio.InferInput("input", list(x.shape), datatype)
            tensor.set_data_from_numpy(x)
            calls = [client.infer(model, [tensor]) for _ in range(4)]
            return [r.as_numpy("probabilities") for r in await asyncio.gather(*calls)]

    return {"probabilities": asyncio.run(main())}


def infer_typed(url: str, model: str, x: npt.NDArray[np.float64]) -> Outcome:
    """A request with typed ``contents`` (fp64_contents), sent through Triton's own stub."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=model, id="typed")
    tensor = request.inputs.add(name="input", datatype="FP64", shape=list(x.shape))
    tensor.contents.fp64_contents.extend(x.ravel().tolist())
    with grpc.insecure_channel(url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    return {
        "raw": len(response.raw_output_contents),
        "outputs": {
            o.name: (o.datatype, list(o.shape), list(o.contents.fp64_contents))
            for o in response.outputs
        },
    }


def control(url: str, model: str, action: str, headers: dict[str, str] | None = None) -> Outcome:
    """``load_model`` or ``unload_model``: ``{}`` or the error."""
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    with triton.InferenceServerClient(url) as client:
        try:
            getattr(client, f"{action}_model")(model, headers=headers)
        except InferenceServerException as exc:
            return _error(exc)
    return {}
