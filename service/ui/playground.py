"""The playground page at ``/``: a softmax explorer and a decision-region map.

Plain HTML, CSS and JavaScript from ``service/ui/static`` (shipped in the wheel), calling
the service's own API; nothing is fetched from anywhere else, and the page's
Content-Security-Policy tells the browser to refuse anything that would be.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

#: Where the page's script and stylesheet are served.
STATIC_PREFIX = "/playground/static"

#: Only this service: scripts, styles and API calls from the page's own origin.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def mount_playground(app: FastAPI) -> None:
    """``GET /`` (the page) and ``/playground/static/*`` (its script and stylesheet)."""
    page = (STATIC / "playground.html").read_bytes()  # once: no file reads per request
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC), "playground")

    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page, headers=HEADERS)
