"""``DirectRoute``: documented like any FastAPI route, served without FastAPI's per-request work.

For a one-row prediction, FastAPI's request handling (solving dependencies, reading
and validating the body into parameters, validating the response) costs about a third
of the whole request. The hot endpoints therefore take only the ``Request`` plus their
string path parameters, parse the body themselves with the same pydantic model that
documents it (``service.http.bodies``), and return a ready ``Response``. This route class
keeps FastAPI's OpenAPI generation from the endpoint's signature and
``openapi_extra``. ``service.http.gateway`` finds these routes in the routing table and calls
their endpoints itself, before FastAPI's middleware stack; reached through the router
instead (an application without the gateway), a route calls its endpoint like a plain
Starlette route, and errors go through the application's exception handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import request_response


class ProtocolRoute(APIRoute):
    """An ``APIRoute`` that says how its protocol answers input it cannot take.

    The native API answers 422 (the body is JSON, but not what the route takes); TF
    Serving and the Open Inference Protocol answer every invalid request 400. Each
    protocol declares its own through ``route_classes``; the error answer reads it from
    the route that served the request (``service.http.error_responses``).
    """

    invalid_input_status: ClassVar[int] = 422


class DirectRoute(ProtocolRoute):
    """A route whose endpoint is called as ``endpoint(request=..., **path_params)``.

    Add these routes to the application's router as they are (``add_direct_routes``):
    ``include_router`` would wrap them in FastAPI's per-request machinery again.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.app = request_response(self.get_route_handler())

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Call the endpoint with the request and its path parameters, nothing else."""
        endpoint: Callable[..., Coroutine[Any, Any, Response]] = self.endpoint

        async def serve(request: Request) -> Response:
            return await endpoint(request=request, **request.path_params)

        return serve


def route_classes(invalid_input_status: int) -> tuple[type[ProtocolRoute], type[DirectRoute]]:
    """A protocol's route classes, ordinary and hot, answering invalid input with this status."""
    attributes = {"invalid_input_status": invalid_input_status}
    route = type("ProtocolRoute", (ProtocolRoute,), attributes)
    direct = type("DirectRoute", (DirectRoute,), attributes)
    return route, direct


def add_direct_routes(app: FastAPI, router: APIRouter) -> None:
    """Put ``router``'s routes first in ``app``'s routing table, unwrapped."""
    app.router.routes[:0] = router.routes
