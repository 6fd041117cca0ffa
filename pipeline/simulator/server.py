"""The Simulator: a real HTTP/1.1 server (stdlib only) on one local port that serves the API
stand-in, the presigned files and the control endpoints, plus its request log."""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .faults import Faults, SimRequest
from .files import FileServer
from .records import iso, seeded_hex
from .routes import API_PREFIX, MAX_PER_PAGE, Api, control
from .transport import Handler, Server
from .artifacts import artifacts
from .webhooks import WELL_KNOWN_PATH, webhook_keys
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
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Simulator:
        if self._server is not None:
            return self
        self._server = Server((self.host, self.port), Handler, self)
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
        kind = "key" if path == WELL_KNOWN_PATH else "artifact" if path.startswith("/artifacts/") else kind
        entry = SimRequest(method, path, query, h.headers.get("Range"), kind,
                           authorization="Authorization" in h.headers, if_range=h.headers.get("If-Range"),
                           connection=h.client_address[1])
        with self.lock:
            self.requests.append(entry)
        h.sim_entry = entry
        self.faults.answering(entry)
        body = h.read_body()
        if kind == "key":  # the webhook public key, without authentication, as RealtimeKit serves it
            h.send_json(200, webhook_keys(self).document())
        elif kind == "artifact":  # a meeting's transcript, summary or chat export (announced by webhook)
            artifacts(self).serve(h, method, path, query)
        elif kind == "file":
            self.files.serve(h, method, path, query)
        elif kind == "control":
            control(self, h, method, path, body)
        else:
            self.api.handle(h, method, path, query, body)
