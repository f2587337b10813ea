"""service.http.gateway: it serves exactly the routes the router would, with the same parameters."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Match

from service.app import create_app
from service.http.gateway import HotRoutes
from service.http.routing import DirectRoute
from service.operations.logs import JSONFormatter
from service.settings import Settings

PATHS = [
    "/predict",
    "/softmax",
    "/models/blobs/predict",
    "/models/blobs/versions/3/predict",
    "/models/my.model-2/versions/latest/predict",
    "/v1/models/blobs:predict",
    "/v1/models/blobs/versions/7:predict",
    "/v1/models/blobs:classify",
    "/v1/models/blobs/labels/stable:predict",
    "/v1/models/blobs/labels/stable:regress",
    "/models/blobs/labels/canary/predict",
    "/v2/models/blobs/infer",
    "/v2/models/blobs/versions/2/infer",
    "/v2/repository/models/blobs/load",
    "/models/a/b/predict",
    "/predict/",
    "/health/ready",
    "/metrics",
    "/",
]


def _router_choice(routes: list[object], path: str) -> tuple[object, dict[str, object]] | None:
    """What Starlette's router would run for ``POST path``: the first full match."""
    scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": []}
    for route in routes:
        match, child = route.matches(scope)  # type: ignore[attr-defined]
        if match == Match.FULL:
            return route, dict(child.get("path_params", {}))
    return None


@pytest.mark.parametrize("path", PATHS)
def test_the_gateway_serves_what_the_router_would(tmp_path: Path, path: str) -> None:
    routes = list(create_app(Settings(model_repository=tmp_path)).router.routes)
    expected = _router_choice(routes, path)
    found = HotRoutes(routes).match(path)
    if expected is None or not isinstance(expected[0], DirectRoute):
        assert found is None  # the router's business (or a 404/405)
    else:
        assert found == expected


def test_every_inference_route_is_served_by_the_gateway(tmp_path: Path) -> None:
    routes = create_app(Settings(model_repository=tmp_path)).router.routes
    hot = HotRoutes(routes)
    served = {route.path for route in [*hot.exact.values(), *hot.templated]}
    assert served == {
        "/predict",
        "/softmax",
        "/models/{name}/predict",
        "/models/{name}/versions/{version}/predict",
        "/v1/models/{name}:predict",
        "/v1/models/{name}/versions/{version}:predict",
        "/v1/models/{name}:classify",
        "/v1/models/{name}/versions/{version}:classify",
        "/models/{name}/labels/{label}/predict",
        "/v1/models/{name}/labels/{label}:predict",
        "/v1/models/{name}/labels/{label}:classify",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/models/{name}/explain",
        "/models/{name}/versions/{version}/explain",
        "/v1/models/{name}:explain",
        "/v1/models/{name}/versions/{version}:explain",
    }


def test_access_lines_still_buffered_are_written_at_shutdown(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    app = create_app(Settings(model_repository=tmp_path))

    def requests() -> list[str]:
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        return [line["request_id"] for line in lines if line.get("event") == "request"]

    async def serve() -> tuple[list[str], list[str]]:
        inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        outbox: list[dict[str, str]] = []

        async def send(message: Any) -> None:
            outbox.append(message)

        scope = {"type": "lifespan", "state": {}}
        lifespan = asyncio.create_task(app(scope, inbox.get, send))
        await inbox.put({"type": "lifespan.startup"})
        while not outbox:
            await asyncio.sleep(0.001)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for i in range(5):
                response = await client.get("/health/live", headers={"X-Request-ID": f"r{i}"})
                assert response.status_code == 200
        before = requests()  # well within the 0.2 s the lines may wait
        await inbox.put({"type": "lifespan.shutdown"})
        await lifespan
        return before, requests()

    try:
        before, after = asyncio.run(serve())
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert before == []
    assert after == [f"r{i}" for i in range(5)]
