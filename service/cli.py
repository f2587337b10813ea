"""``python -m service``: serve every model in the repository with uvicorn.

Flags override ``SERVICE_*`` environment variables, which override the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from pydantic import SecretStr, ValidationError

from service.operations import logs
from service.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI


def parser() -> argparse.ArgumentParser:
    """The command line; every flag also reads ``SERVICE_<FLAG>`` from the environment."""
    p = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the Keras softmax classifiers of a model repository over HTTP.",
    )
    p.add_argument("--model-repository", type=Path, help="default: models")
    p.add_argument("--host", help="default: 127.0.0.1")
    p.add_argument("--port", type=int, help="default: 8000")
    p.add_argument("--workers", type=int, help="worker processes (default: 1)")
    p.add_argument("--default-model", help="model served at /predict")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    return p


def _env_value(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return ",".join(_env_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _env(settings: Settings) -> dict[str, str]:
    """Settings as SERVICE_* variables, so worker processes rebuild the very same settings."""
    data = settings.model_dump(mode="python")
    data["model_batching"] = settings.model_dump(mode="json")["model_batching"]
    return {
        f"SERVICE_{key.upper()}": _env_value(value)
        for key, value in data.items()
        if value is not None
    }


def worker_app() -> FastAPI:
    """The application of one worker process (``--workers N``): settings come from the
    SERVICE_* variables the parent exported, and logging is set up here because a
    spawned worker starts with none."""
    gc.disable()  # while the application imports, as in service/__main__.py
    settings = Settings()
    logs.configure(settings.log_level)
    # uvicorn turned its own access logger off in this process (access_log=False) before
    # calling this factory, and logs.configure just turned it back on: every request would
    # be logged twice. The service writes its own access lines (SERVICE_ACCESS_LOG).
    logging.getLogger("uvicorn.access").propagate = False
    from service.app import create_app

    return create_app(settings, serve_grpc=True)


def _address_problem(host: str, port: int) -> str | None:
    """None when ``host:port`` can be listened on now, else why not (e.g. it is in use).

    Checked before anything is loaded, so that a busy port costs nothing and the last
    line the user reads says what went wrong.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until it is stopped; returns the exit status."""
    args = parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"error: invalid settings: {problems}", file=sys.stderr)
        return 2
    problem = _address_problem(settings.host, settings.port)
    if problem is not None:
        print(
            f"error: cannot listen on {settings.host}:{settings.port}: {problem.lower()}; "
            "choose another with --port or SERVICE_PORT",
            file=sys.stderr,
        )
        return 1
    if settings.grpc_port:
        problem = _address_problem(settings.host, settings.grpc_port)
        if problem is not None:
            print(
                f"error: cannot listen for gRPC on {settings.host}:{settings.grpc_port}: "
                f"{problem.lower()}; choose another with SERVICE_GRPC_PORT (0: no gRPC)",
                file=sys.stderr,
            )
            return 1
    logs.configure(settings.log_level)
    common = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop" if sys.platform != "win32" else "asyncio",
        "http": "service.http.head_deadline:HeaderTimeoutProtocol",  # httptools + a head deadline
        "ws": "none",  # no WebSocket routes: uvicorn need not import a WebSocket library
        "log_level": settings.log_level,
        "access_log": False,
        "timeout_graceful_shutdown": settings.timeout_graceful_shutdown,
        "timeout_keep_alive": settings.timeout_keep_alive,
        "server_header": False,
        "log_config": None,  # uvicorn's loggers go through ours (JSON lines)
    }
    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal into
    # the handler that was there before it. Make that a no-op, so a graceful stop exits 0.
    os.environ["SERVICE_HEADER_TIMEOUT"] = str(settings.header_timeout)  # for the protocol
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda signum, frame: None)
    if settings.workers == 1:
        from service.app import create_app

        uvicorn.run(create_app(settings, serve_grpc=True), **common)  # type: ignore[arg-type]
    else:
        # The supervisor never builds the app (each worker does): it does not import it
        # either, and spawns the workers ~0.35 s sooner.
        os.environ.update(_env(settings))
        with contextlib.ExitStack() as stack:
            if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                # Every worker writes its metrics here; /metrics in any worker sums them up.
                shared = stack.enter_context(tempfile.TemporaryDirectory(prefix="softmax-metrics-"))
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
            uvicorn.run(
                "service.cli:worker_app",
                factory=True,
                workers=settings.workers,
                **common,  # type: ignore[arg-type]
            )
    return 0
