"""The KServe SDK's own gRPC client (``kserve.InferenceGRPCClient``) against the real
server's Open Inference Protocol listener: health, binary and typed tensors, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest

from tests.conftest import TrainedRepository
from tests.protocols.test_grpc import GrpcServer, start_grpc_server
from tests.protocols.test_v2 import native, points


@pytest.fixture(scope="module")
def served(
    trained: TrainedRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GrpcServer]:
    running = start_grpc_server(
        trained.workdir, tmp_path_factory.mktemp("kserve-grpc") / "server.log"
    )
    yield running
    assert running.server.stop() == 0, running.server.output()


def ask(target: str, calls: Any) -> Any:
    """Run ``calls(client)`` with a fresh client on a fresh event loop."""

    async def main() -> Any:
        client = InferenceGRPCClient(target, timeout=30)
        try:
            return await calls(client)
        finally:
            await client.close()

    return asyncio.run(main())


def tensor(x: np.ndarray, binary: bool) -> InferInput:
    value = InferInput(name="input", shape=list(x.shape), datatype="FP64")
    value.set_data_from_numpy(x, binary_data=binary)
    return value


def test_health_calls_answer_true(served: GrpcServer) -> None:
    async def calls(client: InferenceGRPCClient) -> tuple[bool, bool, bool]:
        return (
            await client.is_server_live(),
            await client.is_server_ready(),
            await client.is_model_ready("blobs"),
        )

    assert ask(served.target, calls) == (True, True, True)


@pytest.mark.parametrize("binary", [True, False], ids=["raw contents", "typed contents"])
def test_infer_answers_predicts_probabilities_bit_for_bit(served: GrpcServer, binary: bool) -> None:
    x = points(7)

    async def calls(client: InferenceGRPCClient) -> Any:
        request = InferRequest(
            model_name="blobs", infer_inputs=[tensor(x, binary)], request_id="k-7"
        )
        return await client.infer(request)

    answer = ask(served.target, calls)
    assert (answer.model_name, answer.model_version, answer.id) == ("blobs", "1", "k-7")
    outputs = {o.name: o.as_numpy() for o in answer.outputs}
    with httpx.Client(base_url=served.server.url) as http:
        expected = native(http, x)
    assert outputs["probabilities"].dtype == np.float64
    np.testing.assert_array_equal(outputs["probabilities"], expected)


def test_an_unknown_model_and_a_wrong_shape_are_clear_errors(served: GrpcServer) -> None:
    async def unknown(client: InferenceGRPCClient) -> Any:
        return await client.infer(InferRequest("nope", infer_inputs=[tensor(points(1), True)]))

    async def wrong(client: InferenceGRPCClient) -> Any:
        x = np.zeros((2, 3))
        return await client.infer(InferRequest("blobs", infer_inputs=[tensor(x, True)]))

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        ask(served.target, unknown)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "received 'nope'" in str(missing.value.details())
    with pytest.raises(grpc.aio.AioRpcError) as shape:
        ask(served.target, wrong)
    assert shape.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "received [2, 3]" in str(shape.value.details())
