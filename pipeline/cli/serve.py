"""`rtk-archive serve`: the webhook service (pipeline.service) until SIGTERM/SIGINT, then exit 0."""

from __future__ import annotations

import sys

from pipeline import errors
from pipeline.cli.output import Outcome, load
from pipeline.redact import REDACTOR


def cmd_serve(args) -> Outcome:
    from pipeline.service.server import run_service

    config = load(args)
    settings = config.serve
    workers = settings.workers if args.workers is None else args.workers
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    def started(service) -> None:  # one line on stderr whatever the level: a service says where it listens
        print(f"rtk-archive serve: listening on {service.url}{settings.webhook_path} with "
              f"{f'{workers} worker(s)' if workers else 'no worker (receiving only)'}; SIGTERM to stop",
              file=sys.stderr, flush=True)

    run_service(config, workers=workers, host=host, port=port, redact=REDACTOR, on_ready=started)
    return Outcome(errors.EXIT_OK, {"stopped": True}, "serve: stopped")


def run_demo_serve(args) -> Outcome:
    """`demo --serve`: the simulator, `serve` and a local folder under --dir. serve's start-up
    reconcile archives what the simulator already has; then a new recording appears every 2 s,
    the simulator announces it with a signed webhook, and serve archives it. Ends after
    `--new` of them are archived (or a minute and a half without progress)."""
    import contextlib
    import threading
    import time
    import tomllib

    from pipeline.cli.demo_setup import demo_config, demo_folder
    from pipeline.config import parse_config
    from pipeline.ledger import open_ledger
    from pipeline.service.server import run_service
    from pipeline.service_settings import ServeConfig, WebhookConfig
    from pipeline.simulator import Simulator
    from pipeline.simulator.webhooks import WELL_KNOWN_PATH, WebhookSender

    folder = demo_folder(args.dir)
    lines = [f"demo folder: {folder}"]
    with Simulator(recordings=args.recordings, seed=7, min_size=64 * 1024, max_size=1024 * 1024) as sim:
        env = {"RTK_DEMO_ACCOUNT_ID": sim.account_id, "RTK_DEMO_APP_ID": sim.app_id,
               "RTK_DEMO_API_TOKEN": sim.token, "RTK_DEMO_BASE_URL": sim.base_url, "RTK_DEMO_DIR": str(folder)}
        config = parse_config(tomllib.loads(demo_config()), environ=env)
        config = config.model_copy(update={
            "serve": ServeConfig(port=0, workers=2),
            "webhook": WebhookConfig(public_key_url=sim.origin + WELL_KNOWN_PATH)})
        REDACTOR.add(config.secret_values())
        started, failed = [], []

        def serve() -> None:
            try:
                run_service(config, workers=2, host="127.0.0.1", port=0, redact=REDACTOR, on_ready=started.append)
            except BaseException as exc:  # handed to the main thread below
                failed.append(exc)

        thread = threading.Thread(target=serve, name="rtk-demo-serve", daemon=True)
        thread.start()
        while not started and not failed:
            time.sleep(0.05)
        if failed:
            raise failed[0]
        service = started[0]
        url = service.url + config.serve.webhook_path
        lines.append(f"serve: listening on {url}; a start-up reconcile archives what the simulator already has")
        archived: dict[str, float] = {}
        try:
            with WebhookSender(sim, url, new_every=2.0) as webhooks:
                last_progress = time.monotonic()
                while len(archived) < args.new and time.monotonic() - last_progress < 90:
                    time.sleep(0.2)
                    with contextlib.closing(open_ledger(config.ledger.path)) as ledger:
                        for delivery in list(webhooks.deliveries):
                            row = ledger.recording(delivery.subject) if delivery.subject else None
                            if delivery.delivered and delivery.subject not in archived and row \
                                    and row.state == "archived":
                                archived[delivery.subject] = time.time() - delivery.sent_at
                                last_progress = time.monotonic()
        finally:
            service.stop()
            thread.join()
        if failed:
            raise failed[0]
    for rid, seconds in archived.items():
        lines.append(f"  new recording {rid}: webhook answered 202, archived {seconds:.1f} s later")
    files = sorted(p for p in (folder / "archive").rglob("*") if p.is_file())
    lines += [f"archive: {len(files)} files under {folder / 'archive'}",
              f"ledger: {config.ledger.path}   audit log: {config.audit.path}",
              "next: rtk-archive serve --config YOUR.toml (see README, 'rtk-archive serve')"]
    code = errors.EXIT_OK if len(archived) >= args.new else errors.EXIT_FAILURES
    payload = {"dir": str(folder), "archived_by_webhook": archived, "files": len(files)}
    return Outcome(code, payload, "\n".join(lines),
                   error=None if code == errors.EXIT_OK else f"only {len(archived)} of {args.new} announced "
                                                              "recordings were archived")
