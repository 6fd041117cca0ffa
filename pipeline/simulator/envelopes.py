"""The two error envelopes the simulator answers with, as the API does: Cloudflare's and
RealtimeKit's own."""

from __future__ import annotations

from typing import Any


def cf_error(code: int, message: str) -> dict[str, Any]:
    """Cloudflare's API envelope (auth, routing, rate limits, gateway)."""
    return {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}


def rtk_error(code: int, message: str) -> dict[str, Any]:
    """RealtimeKit's own envelope."""
    return {"success": False, "error": {"code": code, "message": message}}
