"""gRPC against HTTP on the tabular one-row model, in turns: ModelInfer with raw contents,
the Open Inference Protocol's binary tensors over HTTP, and ``/predict``.

    python benchmarks/grpc_vs_http.py            # 7 rounds of 4 s, at 1 and 16 requests in flight
    python benchmarks/grpc_vs_http.py --quick    # 2 rounds of 2 s: the form of the output
    python benchmarks/grpc_vs_http.py --rows 10000   # a batch: what the payload costs

The default model is trained with the project's command and served by one service,
started as users start it (``python -m service``, ``SERVICE_GRPC_PORT`` set), pinned to
one core; the client runs on the other. One process answers all three forms of the same
rows (FP32 ``[rows, 2]``, only the probabilities asked for):

- ``/predict``: ``{"instances": [[15.0, 0.0]]}`` over HTTP/1.1 keep-alive connections;
- ``V2 binary HTTP``: ``POST /v2/models/blobs/infer``, the input and the output as binary
  tensors (``tritonclient.http``'s default);
- ``gRPC raw``: ``inference.GRPCInferenceService/ModelInfer`` with ``raw_input_contents``
  (``tritonclient.grpc``'s default), over one HTTP/2 channel.

Each is first checked once (the same probabilities from all three). Then, per level of
concurrency, each round gives each form the load for ``--duration`` seconds, one after
the other, each round starting one form later; the report gives each form's median
req/s, p50 and the server's CPU time per request (from ``/proc``: it does not depend
on the client's speed), and the paired per-round ratios to ``/predict``. The client is
Python for all three (asyncio sockets for HTTP, ``grpc.aio`` for gRPC), so at 16 in
flight it may be the limit: the CPU per request is the server's own cost. Exits 1 on any
error answer.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import numpy.typing as npt
import orjson
from harness import machine, plan, pyload
from harness.processes import free_port, tree_cpu_seconds
from run import say

from service.protocols.grpc import predict_v2_pb2 as pb

MODEL = "blobs"
INFER = "/inference.GRPCInferenceService/ModelInfer"
PREDICT, V2, GRPC = "/predict", "V2 binary HTTP", "gRPC raw"
FORMS = (PREDICT, V2, GRPC)

Load = Callable[[int, float], Awaitable["Run"]]


@dataclass
class Run:
    """One turn: latencies of the answers, and the errors."""

    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python benchmarks/grpc_vs_http.py", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--rounds", type=int, default=7, help="turns each (default 7)")
    p.add_argument("--duration", type=float, default=4, help="seconds per turn (default 4)")
    p.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    p.add_argument("--quick", action="store_true", help="2 rounds of 2 s, a 3-epoch model")
    return p.parse_args(argv)


def batch(rows: int) -> npt.NDArray[np.float32]:
    """The rows every form sends: ``[15, 0]`` alone, or points over and around the blobs."""
    if rows == 1:
        return np.array([[15.0, 0.0]], dtype="<f4")
    return np.random.default_rng(0).uniform(-10, 40, size=(rows, 2)).astype("<f4")


def predict_body(x: npt.NDArray[np.float32]) -> bytes:
    """The ``/predict`` request (JSON numbers: the float32 values, exactly)."""
    return orjson.dumps({"instances": x.astype(np.float64).tolist()})


def v2_body(x: npt.NDArray[np.float32]) -> tuple[bytes, dict[str, str]]:
    """The V2 binary request: the JSON header, then the FP32 rows; and its headers."""
    raw = x.tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    )
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return header + raw, headers


def grpc_body(x: npt.NDArray[np.float32]) -> bytes:
    """The ModelInfer request, serialized once (the messages are the wire's, whatever their
    protobuf package)."""
    request = pb.ModelInferRequest(model_name=MODEL, raw_input_contents=[x.tobytes()])
    request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    request.outputs.add(name="probabilities")
    return request.SerializeToString()


def check(url: str, target: str, x: npt.NDArray[np.float32]) -> list[str]:
    """One request of each form: the problems (empty: none), e.g. different probabilities."""
    answers, problems = {}, []
    predicted = httpx.post(url + PREDICT, content=predict_body(x), timeout=30)
    if predicted.status_code != 200:
        return [f"{PREDICT} answered {predicted.status_code}: {predicted.text[:200]}"]
    rows = [p["probabilities"] for p in predicted.json()["predictions"]]
    answers[PREDICT] = np.array(rows, dtype=np.float32).ravel()
    body, headers = v2_body(x)
    binary = httpx.post(url + f"/v2/models/{MODEL}/infer", content=body, headers=headers)
    if binary.status_code != 200:
        return [f"{V2} answered {binary.status_code}: {binary.text[:200]}"]
    size = int(binary.headers["inference-header-content-length"])
    answers[V2] = np.frombuffer(binary.content[size:], dtype="<f4")
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(INFER)
        try:
            # wait_for_ready: gRPC listens once the first load is over, after HTTP's readiness
            answer = call(grpc_body(x), timeout=30, wait_for_ready=True)
            reply = pb.ModelInferResponse.FromString(answer)
        except grpc.RpcError as exc:
            return [f"{GRPC} failed: {exc.code().name} {exc.details()}"]
    answers[GRPC] = np.frombuffer(reply.raw_output_contents[0], dtype="<f4")
    for form in (V2, GRPC):
        if not np.array_equal(answers[form], answers[PREDICT]):
            problems.append(f"{form}: {answers[form]} is not {PREDICT}'s {answers[PREDICT]}")
    return problems


def http_load(url: str, path: str, body: bytes, headers: dict[str, str]) -> Load:
    """``in_flight`` keep-alive connections POSTing ``body`` back to back (as pyload.py)."""
    lines = [f"{name}: {value}" for name, value in headers.items()]
    host, port, request = pyload.request_bytes(url + path, body, lines)

    async def load(in_flight: int, seconds: float) -> Run:
        tally = pyload.Tally()
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(
                pyload.connection(host, port, request, deadline, 10.0, tally)
                for _ in range(in_flight)
            )
        )
        return Run(tally.latencies_ns, tally.non_200 + tally.socket_errors)

    return load


def grpc_load(target: str, body: bytes) -> Load:
    """``in_flight`` calls at all times on one channel, the request bytes sent as they are."""

    async def load(in_flight: int, seconds: float) -> Run:
        run = Run()
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary(INFER)
            deadline = time.monotonic() + seconds

            async def stream() -> None:
                while time.monotonic() < deadline:
                    started = time.perf_counter_ns()
                    try:
                        await call(body, timeout=10)
                    except grpc.RpcError:
                        run.errors += 1
                        continue
                    run.latencies_ns.append(time.perf_counter_ns() - started)

            await asyncio.gather(*(stream() for _ in range(in_flight)))
        return run

    return load


def measure(load: Load, in_flight: int, seconds: float, server_pid: int) -> Run:
    """One turn, with the server's CPU time over it."""
    cpu, started = tree_cpu_seconds(server_pid), time.perf_counter()
    run = asyncio.run(load(in_flight, seconds))
    run.seconds, run.cpu_s = time.perf_counter() - started, tree_cpu_seconds(server_pid) - cpu
    return run


def table(runs: dict[str, list[Run]]) -> tuple[list[str], int]:
    """The markdown rows of one concurrency level, and the errors seen."""
    rows = [
        f"| form | req/s | p50 ms | server CPU µs/request | req/s / {PREDICT}'s (paired) |",
        "|---|---|---|---|---|",
    ]
    reference = [len(r.latencies_ns) / r.seconds for r in runs[PREDICT]]
    errors = 0
    for form, taken in runs.items():
        rates = [len(r.latencies_ns) / r.seconds for r in taken]
        p50 = statistics.median(pyload.percentile(sorted(r.latencies_ns), 50) for r in taken)
        cpu = statistics.median(r.cpu_s / max(len(r.latencies_ns), 1) for r in taken)
        ratios = [a / b for a, b in zip(rates, reference, strict=True)]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        errors += sum(r.errors for r in taken)
        rows.append(
            f"| {form} | {statistics.median(rates):,.0f} | {p50 / 1e6:.3f} | {cpu * 1e6:.0f} | "
            f"{statistics.median(ratios):.2f} ({spread}) |"
        )
    return rows, errors


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; returns the exit status: 1 on any error answer."""
    args = parse_args(argv)
    rounds, seconds = (2, 2.0) if args.quick else (args.rounds, args.duration)
    x = batch(args.rows)
    pinning = machine.plan_pinning()
    machine.pin(0, pinning.loadgen)  # before grpc starts its threads: they inherit it
    with tempfile.TemporaryDirectory(prefix="softmax-grpc-") as tmp:
        workdir = Path(tmp)
        say("training the default model")
        version_dir = plan.train(workdir / "models", args.quick, workdir / "train.log")
        grpc_port = free_port()
        spec = plan.ServerSpec(
            plan.SERVICE,
            "service",
            "LiteRT, 1 worker, defaults, gRPC on",
            plan.service(version_dir.parents[1]),
            [],
            env={"SERVICE_GRPC_PORT": str(grpc_port)},
            ready_timeout_s=plan.NO_TENSORFLOW_READY_TIMEOUT_S,
        )
        server = spec.start(workdir / "server.log", pinning.server)
        target = f"127.0.0.1:{grpc_port}"
        try:
            problems = check(server.url, target, x)
            for problem in problems:
                say(f"FAILED: {problem}")
            if problems:
                return 1
            body, headers = v2_body(x)
            json_type = {"Content-Type": "application/json"}
            loads = {
                PREDICT: http_load(server.url, PREDICT, predict_body(x), json_type),
                V2: http_load(server.url, f"/v2/models/{MODEL}/infer", body, headers),
                GRPC: grpc_load(target, grpc_body(x)),
            }
            results: dict[int, dict[str, list[Run]]] = {}
            for in_flight in (1, 16):
                for load in loads.values():  # warm-up
                    measure(load, in_flight, 1.0, server.process.pid)
                results[in_flight] = {form: [] for form in FORMS}
                for turn in range(rounds):
                    order = FORMS[turn % 3 :] + FORMS[: turn % 3]
                    say(f"{in_flight} in flight, round {turn + 1}/{rounds}")
                    for form in order:
                        run = measure(loads[form], in_flight, seconds, server.process.pid)
                        results[in_flight][form].append(run)
        finally:
            server.stop()
    failed = False
    for in_flight, runs in results.items():
        print(f"\n## {in_flight} request{'s' if in_flight > 1 else ''} in flight\n")
        rows, errors = table(runs)
        print("\n".join(rows))
        if errors:
            say(f"FAILED: {errors} error answers at {in_flight} in flight")
            failed = True
    print(
        f"\n{args.rows} row(s) a request; {rounds} rounds of {seconds:g} s; Python clients; "
        f"{pinning.describe()}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
