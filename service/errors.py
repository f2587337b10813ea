"""Every error the service answers with, each carrying its HTTP status.

    ServiceError (500)
    ├── BadRequest (400)
    │   └── MalformedJSON (400) ........ the body is not valid JSON
    ├── InvalidInput (422) ............. wrong shape, type, feature count, non-finite number
    │   └── InferenceFailed ............ the model's runtime failed on input that passed the checks
    ├── Forbidden (403)
    │   └── ModelControlDisabled ....... load, unload or reload asked for while model control is off
    ├── NotFound (404)
    │   ├── ModelNotFound
    │   ├── VersionNotFound
    │   └── LabelNotFound .............. no such version label (``serving.json``)
    ├── VersionRefused (409) ........... a reload found a version it had to refuse
    ├── PayloadTooLarge (413) .......... too many rows (or bytes)
    ├── NotImplementedHere (501) ....... a documented part of a protocol this server does not do
    └── Unavailable (503, Retry-After)
        └── NotReady ................... models still loading, or none loadable

    ModelLoadError ..................... a version refused at load time (never sent to a client)

One handler (``service.app``) turns a ``ServiceError`` into ``{"error": message}``
plus an optional ``detail`` list. Messages say what was expected and what was
received, and never carry paths, stack traces or library internals.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """Base class: ``status_code`` is the HTTP status, ``str(exc)`` the client-facing message."""

    status_code: ClassVar[int] = 500

    def __init__(self, message: str, *, detail: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def headers(self) -> dict[str, str]:
        """Extra response headers."""
        return {}


class BadRequest(ServiceError):
    """The request cannot be read at all."""

    status_code = 400


class MalformedJSON(BadRequest):
    """The body is not valid JSON."""


class InvalidInput(ServiceError):
    """The body is JSON but not what the endpoint takes."""

    status_code = 422


class Forbidden(ServiceError):
    """The request is understood, and this server is set up not to do it."""

    status_code = 403


class ModelControlDisabled(Forbidden):
    """Model control (load, unload, reload on demand) is off: ``SERVICE_MODEL_CONTROL``."""


class InferenceFailed(InvalidInput):
    """The runtime refused input that passed every check; logged with the request id."""


class NotFound(ServiceError):
    """No such resource."""

    status_code = 404


class ModelNotFound(NotFound):
    """No model of that name is served."""


class VersionNotFound(NotFound):
    """The model is served, but not that version."""


class LabelNotFound(NotFound):
    """The model has no version of that label."""


class VersionRefused(ServiceError):
    """A reload was asked for and a version the policy wants was refused; the old one serves."""

    status_code = 409


class PayloadTooLarge(ServiceError):
    """More rows (or bytes) than the configured limit."""

    status_code = 413


class NotImplementedHere(ServiceError):
    """A part of a protocol that is documented and deliberately not implemented."""

    status_code = 501


class Unavailable(ServiceError):
    """Cannot answer now; try again after ``retry_after`` seconds."""

    status_code = 503

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        """Tell the client when to come back."""
        return {"Retry-After": str(self.retry_after)}


class NotReady(Unavailable):
    """The models are still loading, or none could be loaded."""


class ModelLoadError(Exception):
    """A model version was refused at load time; the message says which and why."""
