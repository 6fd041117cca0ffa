"""Running `rtk-archive serve`: open the session once (with the SQLite ledger, its run lock
is held for the service's lifetime, so a nightly `run` meanwhile exits 3), start the worker,
serve HTTP with uvicorn until SIGTERM/SIGINT, then stop accepting, answer the requests in
flight, let the worker's batch finish its uploads (its downloads are abandoned and resume
later), close everything and return (exit 0). A second signal leaves at once, as in a run."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn

from pipeline.archive.run import stop_on_signals
from pipeline.clock import utcnow
from pipeline.config import Config
from pipeline.errors import BookkeepingError, ConfigError
from pipeline.archive.workers import per_process_spool
from pipeline.metrics import build_registry
from pipeline.service.app import build_app
from pipeline.service.artifacts import ArtifactInbox
from pipeline.service.metrics import ServiceMetrics, build_service_registry
from pipeline.service.receiver import Receiver
from pipeline.service.webhooks import PublicKey
from pipeline.service.worker import Worker
from pipeline.session import open_session

log = logging.getLogger("rtk_archive.serve")


@dataclass
class Service:
    """A running service: where it listens, and how to stop it (from any thread)."""
    host: str
    port: int
    metrics: ServiceMetrics
    worker: Worker | None
    _server: uvicorn.Server

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._server.stop.set()


class _Server(uvicorn.Server):
    """uvicorn's server with the signal handling of an archive run (pipeline.archive.run): the
    first SIGTERM/SIGINT sets `stop` (no new connections, the requests in flight answered; the
    worker's batch finishes its uploads and abandons its downloads, which resume later), a
    second one leaves at once. uvicorn's own handlers would raise the signal again afterwards,
    and the command would die of it instead of exiting 0."""

    def __init__(self, config: uvicorn.Config, stop: threading.Event):
        super().__init__(config)
        self.stop = stop

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with stop_on_signals(self.stop):
            yield

    async def on_tick(self, counter: int) -> bool:
        if self.stop.is_set():
            self.should_exit = True
        return await super().on_tick(counter)


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, opened before anything else starts: a busy port is one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"serve: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run_service(config: Config, *, workers: int, host: str, port: int, redact=lambda text: text,
                on_ready: Callable[[Service], None] = lambda service: None) -> None:
    """Serve until stopped (a signal on the main thread, or `Service.stop()`)."""
    sock = listen(host, port)
    # On a shared ledger, downloads go to a spool folder of this process's own (other workers on
    # this host have theirs: a finished run clears only its own); webhooks' URL files stay in the
    # configured spool, where a restarted serve finds them.
    work_config = per_process_spool(config) if config.ledger.shared and workers else config
    try:
        with open_session(work_config, "serve", record=True, targets=workers > 0, api=workers > 0,
                          redact=redact, refusal_is_a_run=True) as context:
            # One registry on /metrics: the archive's state read from the ledger (as the textfile
            # after a run has it) and the service's own counters.
            metrics = build_service_registry(build_registry(context.ledger))
            stop = threading.Event()
            worker = Worker(context, metrics, concurrency=workers, stop=stop,
                            hints_dir=config.archive.spool_dir) if workers else None
            receiver = Receiver(context.ledger, PublicKey(config.webhook), metrics,
                                on_new_work=worker.wake if worker else (lambda: None),
                                artifacts=ArtifactInbox(context.ledger, config.archive.spool_dir))

            def ready() -> tuple[bool, dict]:
                checks: dict = {}
                try:
                    context.ledger.pending_hints(1, now=utcnow())
                    checks["ledger"] = "ok"
                except BookkeepingError as exc:
                    checks["ledger"] = str(exc)
                if worker is not None:
                    checks["worker"] = "running" if worker.alive else f"stopped: {worker.failure or 'shut down'}"
                else:
                    checks["worker"] = "none (--workers 0: receiving only)"
                ok = checks["ledger"] == "ok" and (worker is None or worker.alive)
                return ok, checks

            app = build_app(receiver, config.serve, ready=ready)
            server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                            timeout_graceful_shutdown=30, server_header=False), stop)
            service = Service(host=sock.getsockname()[0], port=sock.getsockname()[1], metrics=metrics,
                              worker=worker, _server=server)
            if worker is not None:
                worker.start()
            log.info("serve: listening on %s%s with %s", service.url, config.serve.webhook_path,
                     f"{workers} worker(s)" if workers else "no worker (receiving only)")
            threading.Thread(target=_when_started, args=(server, service, on_ready), daemon=True).start()
            try:
                server.run(sockets=[sock])
            finally:
                if worker is not None:
                    worker.shutdown()
            if worker is not None and worker.error is not None:
                raise worker.error  # the command fails with it (the audit log broke, or a bug)
    finally:
        sock.close()


def _when_started(server: uvicorn.Server, service: Service, on_ready) -> None:
    while not server.started and not server.should_exit:
        threading.Event().wait(0.05)
    if server.started:
        on_ready(service)
