"""Server processes: start one pinned, time it to ready, measure its memory, stop it.

Every server is started in a session of its own, so the harness can always stop
everything that server started (uvicorn's workers, a peer's inference processes)
and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from harness.machine import pin

#: Consecutive 200s (new connections) that say every worker of a multi-worker server is ready.
READY_STREAK = 20


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerFailed(Exception):
    """The server exited, or never became ready."""

    def __init__(self, what: str, log: str) -> None:
        last = next((line.strip() for line in reversed(log.splitlines()) if line.strip()), "")
        super().__init__(f"{what}; its log ends with: {last[:300]}" if last else what)
        self.log = log


def children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc; empty where there is no /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants."""
    return sum(cpu_seconds(p) for p in [pid, *children(pid)])


def tree_rss_mb(pid: int) -> float:
    """Summed VmRSS of ``pid`` and all its descendants, in MB (10^6 bytes)."""
    return sum(rss_kib(p) for p in [pid, *children(pid)]) * 1024 / 1e6


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class ServerProcess:
    """One running server, started by ``start``."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log
        self.ready_s = float("nan")

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        port: int,
        env: Mapping[str, str],
        cwd: Path,
        log: Path,
        cpus: frozenset[int] | None,
        ready_path: str,
        ready_timeout: float,
        workers: int = 1,
    ) -> ServerProcess:
        """Spawn, pin and wait until ``ready_path`` answers 200 (polled every 10 ms).

        ``ready_s`` is the time from spawn to that answer. With several workers sharing
        one socket, a 200 says only that one of them is ready: then it is the time to
        the first of ``READY_STREAK`` consecutive 200s, each on a new connection.
        Raises ``ServerFailed``.
        """
        with log.open("wb") as sink:
            started = time.perf_counter()
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pin(process.pid, cpus)
        server = cls(process, f"http://127.0.0.1:{port}", log)
        try:
            streak = 1 if workers == 1 else READY_STREAK
            server.ready_s = server._wait_ready(ready_path, started, ready_timeout, streak)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, path: str, started: float, timeout: float, streak: int) -> float:
        deadline = started + timeout
        first_ok, in_a_row = 0.0, 0
        # "Connection: close": every poll is a new connection, accepted by any worker.
        with httpx.Client(timeout=2.0, headers={"Connection": "close"}) as client:
            while time.perf_counter() < deadline:
                if self.process.poll() is not None:
                    raise ServerFailed(
                        f"exited with status {self.process.returncode} before ready",
                        log_tail(self.log),
                    )
                try:
                    ok = client.get(self.url + path).status_code == 200
                except httpx.TransportError:
                    ok = False
                if ok:
                    first_ok = first_ok if in_a_row else time.perf_counter()
                    in_a_row += 1
                    if in_a_row >= streak:
                        return first_ok - started
                    continue
                in_a_row = 0
                time.sleep(0.01)
        raise ServerFailed(f"not ready within {timeout:.0f} s", log_tail(self.log))

    def rss_mb(self) -> float:
        """Summed VmRSS of the server's process tree, in MB."""
        return tree_rss_mb(self.process.pid)

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server's process tree."""
        return tree_cpu_seconds(self.process.pid)

    def largest_child_rss_mb(self) -> float:
        """VmRSS of the largest process below the server's own (a worker), in MB."""
        return max((rss_kib(p) for p in children(self.process.pid)), default=0) * 1024 / 1e6

    def pause(self) -> None:
        """SIGSTOP the server's process tree.

        A paused server takes no CPU at all (some poll queues while idle), so it cannot
        disturb another server being measured on the same core.
        """
        self._signal_tree(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the server's process tree (after ``pause``)."""
        self._signal_tree(signal.SIGCONT)

    def _signal_tree(self, signum: int) -> None:
        pid = self.process.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signum)  # its own session: the group id is its pid
        for member in children(pid):  # and any that left the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, signum)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server, wait, then SIGKILL whatever is left of its session."""
        pid = self.process.pid
        self.resume()  # a paused server would hold the SIGTERM until continued
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        # Its own session (start_new_session): the group id is its pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
