"""The private engine's failure path: one clear line, for the container tier's skip."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.deploy import docker_engine
from tests.deploy.docker_engine import EngineUnavailable, start_engine


def _fake_dockerd(tmp_path: Path, script: str) -> Path:
    fake = tmp_path / "dockerd"
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


def test_a_dockerd_that_exits_is_reported_with_its_last_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = "failed to start daemon: Error initializing network controller: permission denied"
    fake = _fake_dockerd(tmp_path, f'echo "starting"\necho "{message}"\nexit 1\n')
    monkeypatch.setattr(docker_engine, "DOCKERD", fake)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(EngineUnavailable) as caught:
        start_engine(scratch, tmp_path / "data", Path("/bin/true"))
    assert str(caught.value) == f"dockerd exited with 1: {message}"


def test_a_dockerd_that_never_answers_is_stopped_by_its_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Records its own PID, then waits for SIGTERM: start_engine must signal that very PID.
    fake = _fake_dockerd(tmp_path, f'echo $$ > "{tmp_path}/pid"\nexec sleep 600\n')
    monkeypatch.setattr(docker_engine, "DOCKERD", fake)
    monkeypatch.setattr(docker_engine, "ENGINE_START_TIMEOUT", 1)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(EngineUnavailable, match="did not answer within 1 s"):
        start_engine(scratch, tmp_path / "data", Path("/bin/true"))
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
