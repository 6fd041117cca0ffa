"""Reading the API's answers for the client: JSON or not, the two error envelopes, Retry-After,
and the list endpoint's paging (when a listing is complete; whether pages count from 1)."""

from __future__ import annotations

import email.utils
import json
import math
import re
from collections.abc import Mapping
from datetime import timezone
from typing import Any

from .errors import ApiError
from .models import Paging, short_repr

# The official SDKs honour Retry-After only up to a minute; Cloudflare can ask for 5 minutes,
# and the retry budget (max_retry_seconds) bounds the total anyway.
RETRY_AFTER_CAP = 60.0
SNIPPET_CHARS = 200

_TAG = re.compile(r"<[^>]*>")
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def decode(content: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(JSON object, None) or (None, a short text snippet) when the body is not a JSON object."""
    text = content.decode("utf-8", errors="replace")
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None, body_snippet(text)
    if not isinstance(body, dict):
        return None, body_snippet(text)
    return body, None


def body_snippet(text: str) -> str:
    """At most ~200 chars of a non-JSON body, without tags, for an error message."""
    text = _SCRIPT.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = " ".join(text.split())
    if len(text) > SNIPPET_CHARS:
        text = text[: SNIPPET_CHARS - 3] + "..."
    return text or "(empty body)"


def error_entries(body: Mapping[str, Any]) -> tuple[str, ...]:
    """Messages from either envelope: Cloudflare's `errors: [...]` or RealtimeKit's `error: {}`."""
    raw: list[Any] = []
    errors = body.get("errors")
    if isinstance(errors, list):
        raw.extend(errors)
    error = body.get("error")
    if error is not None:
        raw.append(error)
    if not raw and isinstance(body.get("message"), str):
        raw.append(body["message"])
    return tuple(_describe_error(entry) for entry in raw)


def _describe_error(entry: Any) -> str:
    if isinstance(entry, Mapping):
        message = str(entry.get("message") or "").strip() or "no message"
        code = entry.get("code")
        return f"{message} (code {code})" if code not in (None, "") else message
    return str(entry).strip()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now (delta-seconds or an HTTP-date), at most a minute."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def read_paging(raw: Any) -> Paging | None:
    return Paging.model_validate(raw) if isinstance(raw, Mapping) else None


def listing_complete(paging: Paging | None, consumed: int) -> bool:
    """True once total_count is reached, by the server's end_offset or by items seen."""
    if paging is None or paging.total_count is None:
        return False
    return max(paging.end_offset or 0, consumed) >= paging.total_count


def check_first_page(where: str, raw_paging: Any, items: list[Any]) -> None:
    """The documented first page starts at offset 1 (`start_offset 1, end_offset 30`), so page
    numbers count from 1. If the API ever counts from 0, asking for page 1 would silently skip
    the first page of recordings: refuse to list instead (one line, ApiError)."""
    if not isinstance(raw_paging, Mapping) or "start_offset" not in raw_paging:
        return  # no paging to check (the client then stops on total_count or an empty page)
    paging = read_paging(raw_paging)
    start = paging.start_offset if paging is not None else None
    if start == 1 or (not items and not (paging and paging.total_count)):
        return  # as documented, or nothing listed at all (an empty listing may say 0)
    raise ApiError(
        f"{where}: the first page starts at offset {short_repr(raw_paging.get('start_offset'))}, not 1: "
        "the API's paging is not the documented one (it may count pages from 0); "
        "refusing to list rather than miss recordings"
    )
