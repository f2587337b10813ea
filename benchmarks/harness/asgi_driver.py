"""Drive the service's ASGI application in this process, one request at a time, under callgrind.

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=OUT \\
        python benchmarks/harness/asgi_driver.py PLAN.json

Run by ``benchmarks/instructions.py``, which writes the plan: the model repository, the
service's ``SERVICE_*`` settings, and for each form its path, body file and headers.
The application is the one ``python -m service`` serves (``create_app(Settings())``),
started with its lifespan (model loaded and warmed up). Every form is first sent
``warmup`` times; then, for each form in turn, callgrind's instrumentation is switched
on (``callgrind_control -i on``), the form is sent ``requests`` times, switched off and
the counts dumped: dump ``k`` holds form ``k``'s instructions. The requests pass the
gateway, the route, the data plane (its batcher and worker thread) and the runtime,
exactly as a request from uvicorn would; uvicorn's own HTTP parsing is left out (the
same code for every form, its cost differing only by the bodies' length).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def callgrind(*args: str) -> None:
    """Send ``callgrind_control`` a command for this process (a no-op without valgrind)."""
    if os.environ.get("ASGI_DRIVER_CALLGRIND") == "1":
        subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, timeout=120)


async def drive(plan: dict[str, Any]) -> list[int]:
    """Start the application, send each form; each form's response size (to show they answered)."""
    os.environ.update(plan["env"])
    sys.path.insert(0, str(ROOT))
    from service.app import create_app
    from service.http.head_deadline import BODY_COMPLETE  # set by uvicorn's protocol here
    from service.settings import Settings

    app = create_app(Settings(model_repository=Path(plan["repository"]), log_level="warning"))
    state: dict[str, Any] = {}
    startup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    replies: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app(
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state},
            startup.get,
            replies.put,
        )
    )
    started = await replies.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"the service did not start: {started}")

    def scope_for(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), *headers],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": dict(state),
            "extensions": {BODY_COMPLETE: True},
        }

    async def call(scope: dict[str, Any], body: bytes) -> tuple[int, bytes]:
        """The status and body of the application's answer."""
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent[0]["status"], sent[1]["body"]

    # The model loads after start-up: wait until the service says it is ready.
    deadline = asyncio.get_running_loop().time() + 900
    while (await call(scope_for("GET", "/health/ready", []), b""))[0] != 200:
        if asyncio.get_running_loop().time() > deadline:
            raise SystemExit("the service was not ready within 900 s")
        await asyncio.sleep(0.2)

    async def send_form(form: dict[str, Any], body: bytes) -> int:
        headers = [(b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in form["headers"].items()]
        status, answer = await call(scope_for("POST", form["path"], headers), body)
        if status != 200:
            raise SystemExit(f"{form['label']}: {status} {answer[:300]!r}")
        return len(answer)

    bodies = [Path(form["body"]).read_bytes() for form in plan["forms"]]
    for form, body in zip(plan["forms"], bodies, strict=True):
        for _ in range(plan["warmup"]):
            await send_form(form, body)
    sizes = []
    for form, body in zip(plan["forms"], bodies, strict=True):
        callgrind("--instr=on")
        for _ in range(plan["requests"]):
            size = await send_form(form, body)
        callgrind("--instr=off")
        callgrind("--dump")
        sizes.append(size)
    await startup.put({"type": "lifespan.shutdown"})
    await lifespan
    return sizes


def main() -> None:
    """Run the plan given as the one argument; prints each form's response size as JSON."""
    plan = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(asyncio.run(drive(plan))))


if __name__ == "__main__":
    main()
