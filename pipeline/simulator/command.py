"""The `simulate` command as plain functions for the CLI to call, with no CLI imports: its
arguments (validated here) and serve(), which runs a simulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import math
import re
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from .server import Simulator
from .webhooks import WELL_KNOWN_PATH, WebhookSender, interval

MAX_GENERATED_SIZE = 1 << 40  # 1 TiB: file bodies are computed, never stored, but stay sane
_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "KI": 1024, "MI": 1024**2, "GI": 1024**3, "TI": 1024**4}


# serve()'s numbers: (lowest, highest, what it is).
LIMITS: dict[str, tuple[float, float, str]] = {
    "port": (0, 65535, "a port number"),
    "recordings": (0, 100_000, "a whole number"),
    "seed": (0, 2**63 - 1, "a whole number"),
    "url_lifetime": (1, 7 * 86400, "a number of seconds"),
    "min_size": (0, MAX_GENERATED_SIZE, "a size in bytes"),
    "max_size": (0, MAX_GENERATED_SIZE, "a size in bytes"),
    "days": (0, 3650, "a number of days"),
    "throttle_per_connection": (0, MAX_GENERATED_SIZE, "bytes per second"),
}


class SimulateError(ValueError):
    """Settings the simulator cannot run with (sizes inverted, an address it cannot listen on):
    one line for the user, no traceback."""


def size(text: str) -> int:
    """Bytes, optionally with a unit: 65536, 64KiB, 4MiB, 2GiB, 10MB (at most 1 TiB)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?i?B?)?\s*", text, re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 65536, 64KiB, 4MiB)")
    unit = (match.group(2) or "").upper().rstrip("B")
    if unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"unknown unit in {text!r}")
    value = float(match.group(1)) * _UNITS[unit]
    if not value <= MAX_GENERATED_SIZE:  # also refuses inf and nan
        raise argparse.ArgumentTypeError(f"{text!r} is too large: at most 1TiB")
    return int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `simulate` options; their names are serve()'s keyword arguments, which checks them."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port to listen on, 0 for any free one (default 8787)")
    parser.add_argument("--recordings", type=int, default=20, metavar="N",
                        help="recordings to generate, 0 to 100000 (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the generated data, ids and token (default 1)")
    parser.add_argument("--url-lifetime", type=float, default=3600, metavar="SECONDS",
                        help="lifetime of presigned URLs, 1 s to 7 days (default 3600)")
    parser.add_argument("--min-size", type=size, default=64 * 1024, metavar="BYTES", help="smallest generated file (default 64KiB)")
    parser.add_argument("--max-size", type=size, default=4 * 1024 * 1024, metavar="BYTES", help="largest generated file (default 4MiB)")
    parser.add_argument("--days", type=float, default=10,
                        help="spread recordings over this many past days, 0 to 3650 (default 10)")
    parser.add_argument("--webhook-url", metavar="URL",
                        help="deliver signed RealtimeKit webhooks here as recordings finish (its public key is "
                             f"served at {WELL_KNOWN_PATH})")
    parser.add_argument("--new-every", type=interval, metavar="DURATION",
                        help="a new UPLOADED recording appears this often (e.g. 2s; with --webhook-url, each "
                             "one is announced)")
    parser.add_argument("--throttle-per-connection", type=size, default=0, metavar="BYTES",
                        help="bytes per second each file download connection gets, as one TCP stream over a "
                             "long network path does, e.g. 48MiB (default 0: unlimited)")


def check_settings(**settings: float) -> None:
    """SimulateError (one line naming the option) unless each number is in its range (never nan)."""
    for name, value in settings.items():
        low, high, what = LIMITS[name]
        if not low <= value <= high:  # also false for nan
            raise SimulateError(f"--{name.replace('_', '-')} {value!r} is out of range: {what} from {low} to {high}")
    if settings.get("min_size", 0) > settings.get("max_size", math.inf):
        raise SimulateError(f"--min-size ({settings['min_size']} bytes) is larger than --max-size ({settings['max_size']} bytes)")


def announce(simulator: Simulator) -> None:
    """serve()'s default on_ready: a [source] block to paste into a config on stdout, one
    status line on stderr."""
    print("\n".join([
        "[source]",
        f'base_url = "{simulator.base_url}"',
        f'account_id = "{simulator.account_id}"',
        f'app_id = "{simulator.app_id}"',
        f'api_token = "{simulator.token}"',
        "",
        "[webhook]",
        f'public_key_url = "{simulator.origin}{WELL_KNOWN_PATH}"',
    ]), flush=True)
    state = simulator.state()
    print(f"RealtimeKit simulator: {state['recordings']} recordings {state['by_status']} at "
          f"{simulator.base_url}; Ctrl-C to stop", file=sys.stderr, flush=True)


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    recordings: int = 20,
    seed: int = 1,
    url_lifetime: float = 3600,
    min_size: int = 64 * 1024,
    max_size: int = 4 * 1024 * 1024,
    days: float = 10,
    throttle_per_connection: int = 0,
    on_ready: Callable[[Simulator], None] = announce,
    stop: threading.Event | None = None,
    webhook_url: str | None = None,
    new_every: float | None = None,
) -> None:
    """Run a simulator until SIGINT/SIGTERM (on the main thread) or until `stop` is set;
    `on_ready` is called once it listens. Raises SimulateError (one line) for bad settings."""
    check_settings(port=port, recordings=recordings, seed=seed, url_lifetime=url_lifetime, min_size=min_size,
                   max_size=max_size, days=days, throttle_per_connection=throttle_per_connection)
    simulator = Simulator(host=host, port=port, recordings=recordings, seed=seed, url_lifetime=url_lifetime,
                          min_size=min_size, max_size=max_size, days=days)
    simulator.faults.set(throttle_bps=throttle_per_connection)  # each answer is throttled on its own
    try:
        simulator.start()
    except OSError as exc:  # the port is taken, the address is not this machine's, ...
        raise SimulateError(f"simulate: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    stop = stop or threading.Event()
    previous = _install_stop_handlers(stop)
    try:
        with simulator, WebhookSender(simulator, webhook_url, new_every=new_every):
            on_ready(simulator)
            while not stop.wait(0.5):
                pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _install_stop_handlers(stop: threading.Event) -> dict[int, Any]:
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous  # signals can only be handled on the main thread
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda *_: stop.set())
    return previous

