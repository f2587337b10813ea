"""The one way a route reaches the core: the data plane the lifespan put in the request state."""

from __future__ import annotations

from starlette.requests import Request

from service.dataplane import DataPlane


def dataplane(request: Request) -> DataPlane:
    """The data plane serving ``request`` (built once, by the application's lifespan).

    Read from the scope's state (what the lifespan yielded, copied into every request)
    rather than through ``request.state``, which wraps that dict in a new object per request.
    """
    plane: DataPlane = request.scope["state"]["dataplane"]
    return plane
