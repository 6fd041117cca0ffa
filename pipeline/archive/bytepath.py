"""The lean byte path for file bodies: urllib3 (installed with the AWS SDK), read as it arrives
(`read1`), which costs far less CPU per byte than httpx's chunk iteration (see README,
Performance). httpx stays for the API, where bodies are small JSON.

One `FileConnections` per run: a pool of keep-alive connections to the file servers and the
bound on how many file connections are open at once (`[archive] max_connections`), shared by
every download of the run. Every byte received through it passes `on_bytes` (one place: a
bandwidth limiter or a meter hooks in there)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import urllib3

READ_SIZE = 1 << 20  # one read takes at most this much: few calls, and buffers small enough for malloc to reuse

Answer = urllib3.BaseHTTPResponse  # a file server's answer, its body not read yet


class FileConnections:
    """Keep-alive connections for presigned file URLs (never the API token), redirects followed,
    connect and read timeouts, and at most `max_connections` requests in flight at once."""

    def __init__(self, *, timeout: float, max_connections: int, user_agent: str,
                 on_bytes: Callable[[int], None] | None = None):
        self.slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        self.waiting = 0  # requests waiting for a slot: the run's connections are all in use
        self._waiting_lock = threading.Lock()
        self.on_bytes = on_bytes or (lambda n: None)
        self._pool = urllib3.PoolManager(
            num_pools=16, maxsize=max_connections, block=False,
            timeout=urllib3.Timeout(connect=10.0, read=timeout),
            # Only redirects are followed here: every other retry is the download's (it
            # knows where a range stands and how much progress was made).
            retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5,
                                  raise_on_redirect=True),
            headers={"User-Agent": user_agent})

    @contextlib.contextmanager
    def get(self, url: str, headers: dict[str, str]) -> Iterator[urllib3.BaseHTTPResponse]:
        """One GET holding one of the run's connection slots until its body is done with. A body
        not read to its end is closed (its connection is not reused half-read)."""
        if not self.slots.acquire(blocking=False):
            with self._waiting_lock:
                self.waiting += 1
            try:
                self.slots.acquire()
            finally:
                with self._waiting_lock:
                    self.waiting -= 1
        try:
            response = self._pool.request("GET", url, headers={"Accept-Encoding": "identity", **headers},
                                          preload_content=False, decode_content=False)
            try:
                yield response
            finally:
                if not response.isclosed() and response.length_remaining not in (0, None):
                    response.close()
                response.release_conn()
        finally:
            self.slots.release()

    def read(self, response: urllib3.BaseHTTPResponse, most: int) -> bytes:
        """What of the body arrived, up to `most` bytes, without waiting for more (b"" at its
        end); counted through `on_bytes`. (urllib3's `readinto` reads into a temporary and
        copies: a fresh large buffer per call, which costs more in the kernel than the copy.)"""
        data = response.read1(most)
        if data:
            self.on_bytes(len(data))
        return data

    def close(self) -> None:
        self._pool.clear()


def file_connections(config, on_bytes: Callable[[int], None] | None = None) -> FileConnections:
    """The run's file connections, as `[archive]` and `[source]` configure them; `on_bytes`
    sees every byte received (a bandwidth limiter or a meter)."""
    import pipeline

    return FileConnections(timeout=config.source.timeout, max_connections=config.archive.max_connections,
                           user_agent=f"rtk-archive/{pipeline.__version__}", on_bytes=on_bytes)
