"""The command line of a workload script: build its model and write it as a .keras file."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write(build: Callable[[int], Any], description: str | None) -> None:
    """``SCRIPT OUT.keras [--seed N]``: ``build(seed)``, saved to ``OUT.keras``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("out", type=Path, help="where to write the .keras file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = build(args.seed)
    model.save(args.out)
    print(f"{args.out}: {model.count_params()} parameters")
