"""The Simulator: a real HTTP/1.1 server (stdlib only) on one local port that serves the API
stand-in, the presigned files and the control endpoints, plus its request log."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .faults import Faults, SimRequest
from .files import FileServer
from .records import iso, seeded_hex
from .routes import API_PREFIX, MAX_PER_PAGE, Api, cf_error, control
from .world import World

log = logging.getLogger("rtk_archive.simulator")


class Simulator(World):
    """RealtimeKit recordings API + presigned file server on one local port.

    The recordings, meetings, clock and file contents are the World's (add_recording,
    file_bytes, expected_sha256, advance, ...); `faults` switches misbehaviour on; `requests`
    logs every request answered. Use as a context manager, or start() and stop()."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        recordings: int = 20,
        seed: int = 1,
        url_lifetime: float = 3600,
        account_id: str | None = None,
        app_id: str | None = None,
        token: str | None = None,
        min_size: int = 64 * 1024,
        max_size: int = 4 * 1024 * 1024,
        days: float = 10,
        max_per_page: int = MAX_PER_PAGE,
        **faults: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.url_lifetime = url_lifetime
        self.account_id = account_id or seeded_hex("account", seed, 32)
        self.app_id = app_id or seeded_hex("app", seed, 32)
        self.token = token or "sim_" + seeded_hex("token", seed, 36)
        self.max_per_page = max_per_page
        self.faults = Faults(**faults)
        self.requests: list[SimRequest] = []
        self.track_recordings: list[dict[str, Any]] = []  # what each track request asked for
        super().__init__(seed=seed, app_id=self.app_id, recordings=recordings, min_size=min_size,
                         max_size=max_size, days=days)
        self.files = FileServer(self, self.faults, lambda: self.url_lifetime)
        self.api = Api(self)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Simulator:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), Handler, self)
        self.port = self._server.server_address[1]
        # A short poll interval keeps stop() quick: tests start and stop many simulators.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="rtk-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + API_PREFIX

    def download_url(self, recording_id: str, kind: str = "video", *, lifetime: float | None = None) -> str | None:
        """A freshly signed URL (for tests), capped at the retention end like the API's; None
        when the recording has no such file on RealtimeKit's bucket."""
        with self.lock:
            rec = self.recs[recording_id]
            if not rec.has_file(kind):
                return None
            url, _ = self.files.sign(rec, kind, self.origin.split("//", 1)[1], lifetime=lifetime)
        return url

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "base_url": self.base_url,
                "now": iso(self.now()),
                "recordings": len(self.recs),
                "by_status": self.by_status(),
                "requests": len(self.requests),
                "faults": self.faults.to_dict(),
            }

    def dispatch(self, h: Handler, method: str) -> None:
        """Log the request, then hand it to the file server, the control endpoints or the API."""
        split = urlsplit(h.path)
        path = unquote(split.path)
        query = parse_qs(split.query, keep_blank_values=True)
        kind = "file" if path.startswith("/files/") else "control" if path.startswith("/__sim__/") else "api"
        entry = SimRequest(method, path, query, h.headers.get("Range"), kind,
                           authorization="Authorization" in h.headers, if_range=h.headers.get("If-Range"))
        with self.lock:
            self.requests.append(entry)
        h.sim_entry = entry
        self.faults.answering(entry)
        body = h.read_body()
        if kind == "file":
            self.files.serve(h, method, path, query)
        elif kind == "control":
            control(self, h, method, path, body)
        else:
            self.api.handle(h, method, path, query, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], simulator: Simulator) -> None:
        self.simulator = simulator
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class Handler(BaseHTTPRequestHandler):
    """Transport only: parses and writes; all decisions are the Simulator's."""

    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    server_version = "rtk-sim"
    sys_version = ""
    server: _Server
    sim_entry: SimRequest | None = None

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; with Nagle plus the peer's delayed ACK each
        # keep-alive answer would stall ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError) as exc:
            # A keep-alive client closed its socket while we waited for its next request.
            log.debug("client connection reset: %s", exc)

    def _handle(self, method: str) -> None:
        try:
            self.server.simulator.dispatch(self, method)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The client went away mid-answer (timeouts, aborted downloads): normal in tests.
            log.debug("client disconnected: %s", exc)
            self.close_connection = True
        except Exception:
            # A bug in the simulator: log it and answer 500 so the test sees a clear failure.
            log.exception("simulator failed on %s %s", method, self.path.split("?", 1)[0])
            self.close_connection = True
            if self.sim_entry is not None and self.sim_entry.status is None:
                self.send_json(500, cf_error(10002, "simulator internal error (see its log)"))

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True  # not supported: don't misread the next request
            return b""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _note(self, status: int, sent: int = 0) -> None:
        if self.sim_entry is not None:
            self.sim_entry.status = status
            self.sim_entry.bytes_sent += sent

    def start_body(self, status: int, length: int | None, content_type: str, headers: dict[str, str] | None = None,
                   *, chunked: bool = False) -> None:
        """Status and headers. The body is framed by Content-Length, by chunked coding, or (length
        None, not chunked) by closing the connection after it."""
        sent = {"Content-Type": content_type, **(headers or {})}
        if chunked:
            sent["Transfer-Encoding"] = "chunked"
        elif length is None:
            sent["Connection"] = "close"
            self.close_connection = True
        else:
            sent["Content-Length"] = str(length)
        self.send_response(status)
        for name, value in sent.items():
            self.send_header(name, value)
        self.end_headers()
        self._note(status)
        if self.sim_entry is not None:
            self.sim_entry.headers_sent = sent

    def send_bytes(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None, *, drop_after: int | None = None, head: bool = False) -> None:
        self.start_body(status, len(data), content_type, headers)
        if head:
            return
        if drop_after is not None:
            self.wfile.write(data[:drop_after])
            self._note(status, drop_after)
            self._drop()
            return
        self.wfile.write(data)
        self._note(status, len(data))

    def send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(payload, ensure_ascii=False).encode(), "application/json; charset=utf-8", headers)

    def send_xml(self, status: int, code: str, message: str, *, head: bool = False, headers: dict[str, str] | None = None) -> None:
        """An S3-style error document."""
        request_id = secrets.token_hex(8).upper()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
        ).encode()
        self.send_bytes(status, body, "application/xml", headers, head=head)

    def stream(self, buffers: Iterable[memoryview | bytes], *, throttle_bps: int, chunked: bool, cut: bool) -> None:
        """Write the body's buffers, optionally throttled and in chunked coding; `cut`: then cut the
        connection as if it broke (the chunked terminator is never sent)."""
        status = self.sim_entry.status if self.sim_entry and self.sim_entry.status else 200
        for window in buffers:
            if chunked:
                self.wfile.write(b"%x\r\n" % len(window) + bytes(window) + b"\r\n")
            else:
                self.wfile.write(window)
            self._note(status, len(window))
            if throttle_bps > 0:
                time.sleep(len(window) / throttle_bps)
        if cut:
            self._drop()
        elif chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _drop(self) -> None:
        """Cut the connection with the body incomplete: the client sees a broken read."""
        self.close_connection = True
        if self.sim_entry is not None:
            self.sim_entry.cut = True
        # The peer may already be gone; either way the socket is finished.
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
