"""How the RealtimeKit API writes things, with no HTTP imports (loading the config reads these):
its base URL and retention, its timestamp format, and URLs whose query string is a secret."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipeline.clock import iso_utc

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
# RealtimeKit keeps a recording (and signs its URL) for 7 days after it stopped.
RETENTION = timedelta(days=7)


def redact_url(url: str) -> str:
    """The URL without query, fragment and userinfo: presigned signatures live in the query."""
    if not url:
        return ""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal lost its brackets in .hostname
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
    except ValueError:
        # Not parseable as a URL (e.g. a bad port): cut at the first ? or # all the same.
        return re.split(r"[?#]", str(url), maxsplit=1)[0]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_api_time(value: Any) -> datetime:
    """An API timestamp as an aware UTC datetime. Raises ValueError when it is not one.

    Accepts ISO 8601 (with `Z`, an offset or none, which is taken as UTC), and epoch numbers
    (seconds, or milliseconds when too large to be seconds).
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    elif isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        seconds = value / 1000 if abs(value) >= 1e11 else value
        parsed = datetime.fromtimestamp(seconds, tz=timezone.utc)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("empty string")
        parsed = datetime.fromisoformat(text)
    else:
        raise ValueError(f"unexpected type {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def format_api_time(value: datetime | str) -> str:
    """A time as the API writes it (the one format of pipeline.clock); text is passed on as it is."""
    return value if isinstance(value, str) else iso_utc(value)
