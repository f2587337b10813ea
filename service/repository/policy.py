"""Which versions of a model to serve: TF Serving's ``model_version_policy``, as one string.

=================  ===========================================================
``latest``         the newest loadable version (the default; ``latest:1``)
``latest:N``       the N newest loadable versions
``all``            every loadable version
``specific:1,3``   exactly these versions, where they load
=================  ===========================================================

"Loadable" matters: a version the service refuses (bad hash, broken file, wrong
metadata) does not count, so under ``latest`` a broken new version leaves the
previous one serving.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

_SYNTAX = re.compile(r"(latest)(?::(\d+))?|(all)|specific:(\d+(?:,\d+)*)")


@dataclass(frozen=True)
class VersionPolicy:
    """A parsed policy: ``kind`` with ``count`` (latest) or ``versions`` (specific)."""

    kind: Literal["latest", "all", "specific"] = "latest"
    count: int = 1
    versions: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """``latest``, ``latest:N``, ``all`` or ``specific:V1,V2,...``; ``ValueError`` if not."""
        match = _SYNTAX.fullmatch(text.strip().replace(" ", ""))
        if match is None:
            raise ValueError(
                f"expected 'latest', 'latest:N', 'all' or 'specific:V1,V2,...', received {text!r}"
            )
        latest, count, every, specific = match.groups()
        if latest:
            n = int(count) if count else 1
            if n < 1:
                raise ValueError(f"expected latest:N with N >= 1, received {text!r}")
            return cls("latest", count=n)
        if every:
            return cls("all")
        versions = frozenset(int(v) for v in specific.split(","))
        if 0 in versions:
            raise ValueError(f"expected positive version numbers, received {text!r}")
        return cls("specific", versions=versions)

    def __str__(self) -> str:
        if self.kind == "latest":
            return "latest" if self.count == 1 else f"latest:{self.count}"
        if self.kind == "all":
            return "all"
        return "specific:" + ",".join(str(v) for v in sorted(self.versions))

    def candidates(self, on_disk: Iterable[int]) -> list[int]:
        """Versions worth trying, best first: the newest first, only the listed ones if specific."""
        ordered = sorted(on_disk, reverse=True)
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered

    @property
    def limit(self) -> int | None:
        """How many versions to serve at most (None: every candidate that loads)."""
        return self.count if self.kind == "latest" else None
