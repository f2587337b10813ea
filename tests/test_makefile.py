"""The two set-up commands: ``make serve`` installs serving and training only."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def planned(target: str) -> str:
    """What ``make TARGET`` would run from scratch (``-n -B``: printed, not run)."""
    if shutil.which("make") is None:
        pytest.fail("make is required: the README's two commands are make targets")
    # Run as a user would, not as a sub-make of `make test` (which would print directories).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k != "MFLAGS"}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_make_serve_installs_serving_and_training_but_no_test_toolchain() -> None:
    plan = planned("serve")
    assert "pip install --quiet -e '.[train]'" in plan
    assert ".[dev]" not in plan
    assert "-m model_training --model-repository models --if-missing" in plan
    assert plan.rstrip().endswith("-m service --model-repository models")


def test_make_test_installs_the_dev_toolchain() -> None:
    assert "pip install --quiet -e '.[dev]'" in planned("test")
