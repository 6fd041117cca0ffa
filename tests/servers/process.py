"""Start a server process on 127.0.0.1, wait until it answers, stop it by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

S = TypeVar("S")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A child process with its output in a log file; `stop()` ends its whole process group."""

    def __init__(self, name: str, argv: list[str], *, log_dir: Path, env: dict | None = None,
                 cwd: str | None = None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )

    def wait_ready(self, probe: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if probe():
                    return
            except OSError:
                pass  # not listening yet: poll again
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with_kill = self.proc.poll() is None
                if with_kill:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
        self._log.close()


def tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def http_answers(url: str) -> bool:
    """True once anything answers HTTP at `url` (any status)."""
    import httpx

    try:
        httpx.get(url, timeout=2)
        return True
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def running(start: Callable[[Path], S], prefix: str, workdir: Path | None = None) -> Iterator[S]:
    """A server from `start(workdir)` for the length of a `with` block, in a temporary folder
    unless one is given (the benchmarks' way to run them); stopped by `server.stop()`."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        server = start(workdir)
        stack.callback(server.stop)
        yield server
