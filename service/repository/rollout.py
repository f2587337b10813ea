"""How one model's versions are rolled out: version labels, a canary, a shadow.

Read from ``<repository>/<model>/serving.json``, next to the version folders, and re-read
as versions are (hot, no restart)::

    {
      "version_labels": {"stable": 1, "canary": 2},
      "canary_fraction": 0.05,
      "shadow": {"label": "canary", "fraction": 1.0}
    }

- ``version_labels``: TF Serving's labels. ``/v1/models/{name}/labels/{label}:predict``
  (and ``/models/{name}/labels/{label}/predict``) is served by the labelled version. The
  ``stable`` version, if there is one, serves the requests naming no version or label
  (else the newest does).
- ``canary_fraction`` (default 0): that fraction of the requests naming no version and no
  label go to the ``canary``-labelled version instead (of the stable or newest one).
- ``shadow``: a version (``{"version": 2}``) or label (``{"label": "canary"}``) that also
  scores a sampled ``fraction`` (default 1) of the requests the live version served, off
  the response path (``service.operations.shadow``).

Every field is optional; a missing file is ``NO_ROLLOUT``: no labels, no canary, no shadow.
As TF Serving does by default, a label (or shadow) must name a version that is served:
a file that names another is refused when it is read (logged), and the previous rollout
is kept (``check``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: The file, in a model's folder.
ROLLOUT = "serving.json"
#: The label whose version takes the canary's share of requests.
CANARY = "canary"
#: The label whose version serves the requests naming no version (else the newest does).
STABLE = "stable"
_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


class Shadow(BaseModel):
    """The version (by number or label) that scores live traffic off the response path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int | None = Field(default=None, ge=1)
    """The shadow version's number."""
    label: str | None = None
    """Or the label naming it."""
    fraction: float = Field(default=1.0, ge=0.0, le=1.0, allow_inf_nan=False)
    """The share of the live version's requests the shadow also scores."""

    @model_validator(mode="after")
    def _one_version(self) -> Self:
        if (self.version is None) == (self.label is None):
            raise ValueError(
                'expected the shadow to name one version, {"version": N} or {"label": "name"}'
            )
        return self


class Rollout(BaseModel):
    """A model's labels, canary fraction and shadow (``serving.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version_labels: dict[str, int] = Field(default_factory=dict)
    """Label -> version number."""
    canary_fraction: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    """The share of requests naming no version or label served by the ``canary`` version."""
    shadow: Shadow | None = None
    """The version that also scores live traffic, or none."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for label, version in self.version_labels.items():
            if not _LABEL.fullmatch(label):
                raise ValueError(
                    "expected labels of letters, digits, '_', '.' or '-' starting with a "
                    f"letter (at most 64), received {label[:70]!r}"
                )
            if version < 1:
                raise ValueError(
                    f"expected label {label!r} to name a version >= 1, received {version}"
                )
        if self.canary_fraction > 0 and CANARY not in self.version_labels:
            raise ValueError(
                f"expected a {CANARY!r} label for canary_fraction {self.canary_fraction:g}, "
                f"received labels {sorted(self.version_labels)}"
            )
        shadow = self.shadow
        if (
            shadow is not None
            and shadow.label is not None
            and shadow.label not in self.version_labels
        ):
            raise ValueError(
                f"expected the shadow's label {shadow.label!r} among the labels "
                f"{sorted(self.version_labels)}"
            )
        return self

    @property
    def shadow_version(self) -> int | None:
        """The shadow's version number, or ``None`` without a shadow."""
        if self.shadow is None:
            return None
        if self.shadow.version is not None:
            return self.shadow.version
        return self.version_labels[self.shadow.label or ""]

    def check(self, served: list[int]) -> None:
        """Raise ``ValueError`` unless every label and the shadow name a served version."""
        named = {f"label {label!r}": v for label, v in self.version_labels.items()}
        if self.shadow_version is not None:
            named["the shadow"] = self.shadow_version
        missing = [f"{what} names version {v}" for what, v in named.items() if v not in served]
        if missing:
            raise ValueError(
                f"expected labels and shadow to name served versions {served}, received "
                f"{'; '.join(missing)} (the version policy must serve it)"
            )


#: The rollout of a model with no ``serving.json`` (built once: the hot path asks for it).
NO_ROLLOUT = Rollout()


def read_rollout(model_dir: Path) -> Rollout:
    """The rollout in ``model_dir`` (``NO_ROLLOUT`` when there is no file); ``ValueError``
    with one line saying what is wrong with a file that cannot be used."""
    path = model_dir / ROLLOUT
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return NO_ROLLOUT
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {ROLLOUT}: {exc}") from None
    try:
        return Rollout.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"expected {ROLLOUT} to be JSON, received: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'the file'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ValueError(f"expected {ROLLOUT} as documented, received: {problems}") from None
