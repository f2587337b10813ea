"""The playground page at ``/``: a softmax explorer and a decision-region map.

Plain HTML, CSS and JavaScript from ``service/ui/static`` (shipped in the wheel), calling
the service's own API; nothing is fetched from anywhere else, and the page's
Content-Security-Policy tells the browser to refuse anything that would be.

``GET /`` itself is routed by ``service.protocols.native``: the page goes to a browser
(``wants_page``), and KServe's V1 liveness answer to every other client.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
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


@cache  # once: no file reads per request
def _html() -> bytes:
    return (STATIC / "playground.html").read_bytes()


def page(headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """The playground page, with its security headers (and ``headers``)."""
    return HTMLResponse(_html(), headers={**HEADERS, **(headers or {})})


#: The weights that mean "not acceptable" (RFC 9110: a qvalue is "0" [ "." 0*3DIGIT ] or 1).
NOT_ACCEPTABLE = frozenset({"q=0", "q=0.", "q=0.0", "q=0.00", "q=0.000"})


def wants_page(accept: str) -> bool:
    """True when an ``Accept`` header names ``text/html``, as a browser's navigation does.

    Not for ``*/*`` alone: that is what curl and HTTP client libraries send by default.
    """
    for media_range in accept.lower().split(","):
        kind, *parameters = ("".join(part.split()) for part in media_range.split(";"))
        if kind == "text/html" and NOT_ACCEPTABLE.isdisjoint(parameters):
            return True
    return False


def mount_playground(app: FastAPI) -> None:
    """``/playground/static/*``: the page's script and stylesheet (the page is read now)."""
    _html()
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC), "playground")
