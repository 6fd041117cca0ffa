"""A local stand-in for the RealtimeKit recordings API, its presigned file URLs and their faults,
shipped for `rtk-archive demo` and `simulate` and for the tests. Never imported by archiving code.

It is a real HTTP/1.1 server so the client, the downloader and a whole archive run can be tested
over sockets exactly as against Cloudflare: the same paths, envelopes and JSON shapes as the API
reference, presigned URLs that really expire, Range requests, and switchable faults.
"""

from __future__ import annotations

from .command import SimulateError, add_arguments, announce, serve
from .faults import Faults, SimRequest
from .routes import SHAPES
from .server import Simulator
from .world import STATUSES

__all__ = [
    "Faults",
    "SHAPES",
    "STATUSES",
    "SimRequest",
    "SimulateError",
    "Simulator",
    "add_arguments",
    "announce",
    "serve",
]
