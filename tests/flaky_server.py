"""A server that fails on purpose, for the benchmark harness's tests.

    python -m tests.flaky_server --port P [--ok N] [--armed-by FILE] [--status CODE]

A raw ASGI callable under uvicorn, run as the benchmark baselines run (uvloop,
httptools, one worker, no access log). ``GET /health/ready`` always answers 200.
``POST /predict`` answers 200 with a small JSON body; with ``--ok N`` only the first N
requests get that 200 and every later one gets ``--status`` (default 500). With
``--armed-by FILE`` those N are counted from the first request that finds FILE in place
(until then every request gets a 200), so a test decides when the failures start.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import uvicorn

OK_BODY = b'{"predictions": [{"argmax": 0}]}'
FAILED_BODY = b'{"detail": "failing on purpose"}'


def make_app(ok: int | None, armed_by: Path | None, status: int) -> Any:
    """The ASGI application."""
    left = ok  # 200s still to give once armed (None: never fails)
    armed = armed_by is None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal left, armed
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:  # read (and ignore) the whole request body
            more = (await receive()).get("more_body", False)
        code, body = 200, OK_BODY
        if scope["method"] == "POST" and left is not None:
            armed = armed or (armed_by is not None and armed_by.exists())
            if armed and left <= 0:
                code, body = status, FAILED_BODY
            elif armed:
                left -= 1
        headers = [(b"content-type", b"application/json")]
        if 300 <= code < 400:
            headers.append((b"location", b"/predict"))
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ok", type=int, help="requests answered 200 before the failures")
    parser.add_argument("--armed-by", type=Path, help="count --ok from when this file exists")
    parser.add_argument("--status", type=int, default=500, help="the failing answers' status")
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.ok, args.armed_by, args.status),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        log_level="warning",
        server_header=False,
    )


if __name__ == "__main__":
    main()
