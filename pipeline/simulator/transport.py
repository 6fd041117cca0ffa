"""The simulator's HTTP transport: a threading HTTP/1.1 server and the request handler that
parses requests and writes answers (bodies, streams, throttling, cut connections). Every
decision about what to answer is the Simulator's (`server.simulator.dispatch`)."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .envelopes import cf_error
from .faults import SimRequest

log = logging.getLogger("rtk_archive.simulator")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], simulator: Any) -> None:
        # simulator: the Simulator (server.py) that decides every answer; not imported, it imports this.
        self.simulator = simulator
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class Handler(BaseHTTPRequestHandler):
    """Transport only: parses and writes; all decisions are the Simulator's."""

    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    server_version = "rtk-sim"
    sys_version = ""
    server: Server
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
