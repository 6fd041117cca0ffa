"""The API stand-in's routes: the recordings endpoints with the seeds' paths, envelopes and JSON
shapes (list, start, active, get one, pause/resume/stop, track), the API faults, and the
/__sim__/ control endpoints tests and `simulate` users drive it with."""

from __future__ import annotations

import hmac
import json
import time
from datetime import datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from .envelopes import cf_error, rtk_error
from .records import create, finish, iso, parse_time
from .transport import Handler
from .world import STATUSES

if TYPE_CHECKING:
    from .records import Rec

# The Simulator (server.py) that owns the world these routes answer from: not imported (it
# imports this module); any object with its attributes does.
Simulator = Any

API_PREFIX = "/client/v4"
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20
MAX_TRACK_USERS = 100  # user_ids per track recording, as the API reference says
_WRITE_ONLY_STORAGE_KEYS = ("access_key", "secret", "secret_key")

# Key order of each answer shape, as in the API reference's examples.
_BASE_KEYS = (
    "id",
    "audio_download_url",
    "download_url",
    "download_url_expiry",
    "file_size",
    "invoked_time",
    "output_file_name",
    "session_id",
    "started_time",
    "status",
    "stopped_time",
)
SHAPES: dict[str, tuple[str, ...]] = {
    "list": _BASE_KEYS + ("meeting", "recording_duration", "storage_config"),
    "detail": _BASE_KEYS + ("recording_duration", "start_reason", "stop_reason", "storage_config"),
    # Also `data.recording` of a track answer (the official SDK's DataRecording has these keys).
    "active": _BASE_KEYS + ("recording_duration",),
}
_KNOWN_KEYS = frozenset(SHAPES["list"]) | frozenset(SHAPES["detail"])


class BadRequest(Exception):
    """Turns into a 400 with RealtimeKit's error envelope."""


class Api:
    """Answers /client/v4/... requests for the simulator's account and app."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.faults = sim.faults

    def handle(self, h: Handler, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        if self.faults.consume("slow_answers"):
            time.sleep(self.faults.slow_seconds)
        if not self._authorized(h.headers.get("Authorization")):
            h.send_json(401, cf_error(10000, "Authentication error"))
            return
        if self._api_fault(h):
            return
        status, payload = self._route(method, path, query, body, h.headers.get("Host") or self.sim.origin.split("//", 1)[1])
        data = json.dumps(payload, ensure_ascii=False).encode()
        if status == 200 and self.faults.consume("broken_json"):
            data = data[: len(data) // 2]
        if self.faults.consume("drop_answers"):
            h.send_bytes(status, data, "application/json; charset=utf-8", drop_after=len(data) // 2)
            return
        h.send_bytes(status, data, "application/json; charset=utf-8")

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), self.sim.token.encode())

    def _api_fault(self, h: Handler) -> bool:
        """Answer with the first armed API fault; True if one was sent."""
        faults = self.faults
        if faults.consume("forbidden"):
            h.send_json(403, cf_error(10000, "Authentication error"))
        elif faults.consume("rate_limit"):
            headers = {} if faults.retry_after is None else {"Retry-After": str(faults.retry_after)}
            h.send_json(429, cf_error(971, "Please wait and consider throttling your request speed"), headers)
        elif faults.consume("server_errors"):
            status = faults.server_error_status
            if faults.server_error_html:
                h.send_bytes(status, _gateway_page(status), "text/html; charset=utf-8")
            else:
                h.send_json(status, cf_error(10002, "An unknown error has occurred"))
        elif faults.consume("html_answers"):
            h.send_bytes(faults.html_status, _challenge_page(), "text/html; charset=utf-8")
        elif faults.consume("unsuccessful"):
            h.send_json(200, rtk_error(500, "Simulated failure: the request could not be processed"))
        else:
            return False
        return True

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes, hostport: str) -> tuple[int, dict[str, Any]]:
        base = f"{API_PREFIX}/accounts/{self.sim.account_id}/realtime/kit/{self.sim.app_id}/recordings"
        if path != base and not path.startswith(base + "/"):
            return 404, cf_error(7003, "Could not route to " + path + ", perhaps your object identifier is invalid?")
        rest = path[len(base) :].strip("/")
        try:
            payload = json_body(body) if method in ("POST", "PUT") else {}
            with self.sim.lock:
                return self._route_recordings(method, rest, query, payload, hostport)
        except BadRequest as exc:
            return 400, rtk_error(400, str(exc))

    def _route_recordings(self, method: str, rest: str, query: dict[str, list[str]], payload: dict[str, Any], hostport: str) -> tuple[int, dict[str, Any]]:
        if rest == "" and method == "GET":
            return 200, self._list(query, hostport)
        if rest == "" and method == "POST":
            return self._start(payload, hostport)
        if rest == "track" and method == "POST":
            return self._start_track(payload, hostport)
        if rest.startswith("active-recording/") and method == "GET":
            return self._active(rest.split("/", 1)[1], hostport)
        if rest and "/" not in rest and method == "GET":
            rec = self.sim.recs.get(rest)
            if rec is None:
                return 404, rtk_error(404, "Recording not found")
            return 200, {"success": True, "data": self.render(rec, "detail", hostport)}
        if rest and "/" not in rest and method == "PUT":
            return self._change_status(rest, payload, hostport)
        return 404, cf_error(7003, f"No route for {method} {API_PREFIX}/.../recordings/{rest}")

    def render(self, rec: Rec, shape: str, hostport: str, *, expired_urls: bool = False) -> dict[str, Any]:
        """`rec` as the API shows it in an answer of `shape`, with freshly signed URLs."""
        merged = {**rec.raw, **self.sim.files.urls(rec, hostport, expired_urls)}
        keys = SHAPES[shape] + tuple(k for k in rec.raw if k not in _KNOWN_KEYS)
        return {key: merged.get(key) for key in keys}

    def _list(self, query: dict[str, list[str]], hostport: str) -> dict[str, Any]:
        matches = self._filtered(query)  # (in the API's order: oldest first)
        if _one(query, "sort_order", "DESC").upper() == "DESC":
            matches.reverse()
        page_no = max(1, _int_param(query, "page_no", 1))
        if self.faults.pages_from_zero:
            page_no += 1  # page_no=1 answers what a 0-based API calls page 1: the second page
            self.faults.note("pages_from_zero")
        per_page = _int_param(query, "per_page", DEFAULT_PER_PAGE) or DEFAULT_PER_PAGE
        per_page = min(per_page, self.sim.max_per_page)
        offset = (page_no - 1) * per_page
        page = matches[offset : offset + per_page]
        expired_urls = self.faults.consume("expired_list_urls")
        return {
            "data": [self.render(r, "list", hostport, expired_urls=expired_urls) for r in page],
            "paging": {"end_offset": offset + len(page), "start_offset": offset + 1, "total_count": len(matches)},
            "success": True,
        }

    def _filtered(self, query: dict[str, list[str]]) -> list[Rec]:
        statuses = {s.strip().upper() for v in query.get("status", []) for s in v.split(",") if s.strip()}
        bad = statuses - set(STATUSES)
        if bad:
            raise BadRequest(f"invalid status: {', '.join(sorted(bad))}")
        sort_by = _one(query, "sort_by", "invokedTime")
        if sort_by != "invokedTime":
            raise BadRequest("sort_by must be invokedTime")
        if _one(query, "sort_order", "DESC").upper() not in ("ASC", "DESC"):
            raise BadRequest("sort_order must be ASC or DESC")
        start, end = _time_param(query, "start_time"), _time_param(query, "end_time")
        meeting_id = _one(query, "meeting_id", "")
        search = _one(query, "search", "").strip().lower()
        expired = _bool_param(query, "expired")
        now = self.sim.now()
        result = []
        for rec in self.sim.in_order():  # (every page looks at every recording: the cheap tests first)
            if statuses and rec.raw.get("status") not in statuses:
                continue
            if start and rec.invoked < start or end and rec.invoked > end:
                continue
            if meeting_id or search:
                meeting = rec.raw.get("meeting") or {}
                if meeting_id and meeting.get("id") != meeting_id:
                    continue
                if search and search not in str(meeting.get("id", "")).lower() and \
                        search not in str(meeting.get("title", "")).lower():
                    continue
            if expired is not None and (rec.retention_end is not None and rec.retention_end < now) != expired:
                continue
            result.append(rec)
        return result

    def _start(self, payload: dict[str, Any], hostport: str) -> tuple[int, dict[str, Any]]:
        meeting_id = _meeting_id(payload)
        if self.sim.running(meeting_id) and not payload.get("allow_multiple_recordings"):
            return 409, rtk_error(409, "A recording is already running for this meeting")
        bucket = payload.get("realtimekit_bucket_config") or {}
        audio = payload.get("audio_config") or {}
        storage = payload.get("storage_config")
        rec = create(
            self.sim,
            status="RECORDING",
            meeting_id=meeting_id,
            invoked_time=self.sim.now(),
            audio=bool(isinstance(audio, dict) and audio.get("export_file")),
            bucket_enabled=not (isinstance(bucket, dict) and bucket.get("enabled") is False),
        )
        if isinstance(storage, dict):
            rec.raw["storage_config"] = {k: v for k, v in storage.items() if k not in _WRITE_ONLY_STORAGE_KEYS}
        prefix = payload.get("file_name_prefix")
        if isinstance(prefix, str) and prefix:
            rec.raw["output_file_name"] = f"{prefix}_{rec.invoked:%Y%m%dT%H%M%SZ}.mp4"
        return 200, {"success": True, "data": self.render(rec, "detail", hostport)}

    def _active(self, meeting_id: str, hostport: str) -> tuple[int, dict[str, Any]]:
        running = self.sim.running(meeting_id)
        if not running:
            return 404, rtk_error(404, "No active recording found for this meeting")
        latest = max(running, key=lambda r: r.invoked)
        return 200, {"data": self.render(latest, "active", hostport), "success": True}

    def _change_status(self, recording_id: str, payload: dict[str, Any], hostport: str) -> tuple[int, dict[str, Any]]:
        rec = self.sim.recs.get(recording_id)
        if rec is None:
            return 404, rtk_error(404, "Recording not found")
        action = payload.get("action")
        allowed = {"pause": ("RECORDING",), "resume": ("PAUSED",), "stop": ("INVOKED", "RECORDING", "PAUSED")}
        if action not in allowed:
            raise BadRequest("action must be one of stop, pause, resume")
        if rec.raw.get("status") not in allowed[action]:
            raise BadRequest(f"cannot {action} a recording in status {rec.raw.get('status')}")
        if action == "pause":
            rec.raw["status"] = "PAUSED"
        elif action == "resume":
            rec.raw["status"] = "RECORDING"
        else:
            finish(self.sim, rec)
        return 200, {"success": True, "data": self.render(rec, "detail", hostport)}

    def _start_track(self, payload: dict[str, Any], hostport: str) -> tuple[int, dict[str, Any]]:
        """POST .../recordings/track as the current API reference has it: `meeting_id` required;
        `layers` (an object of layer objects) and `user_ids` (up to 100) optional. The answer is
        `{success, data: {recording: {...}}}` (the official SDK's RecordingStartTrackRecordingResponse);
        the recording is a real one here (get one, active and stop work on its id)."""
        meeting_id = _meeting_id(payload)
        layers = payload.get("layers")
        if layers is not None and (not isinstance(layers, dict) or not all(isinstance(v, dict) for v in layers.values())):
            raise BadRequest("layers must be an object of layer objects")
        user_ids = payload.get("user_ids")
        if user_ids is not None and (not isinstance(user_ids, list) or not all(isinstance(u, str) for u in user_ids)
                                     or len(user_ids) > MAX_TRACK_USERS):
            raise BadRequest(f"user_ids must be a list of at most {MAX_TRACK_USERS} strings")
        rec = create(self.sim, status="INVOKED", meeting_id=meeting_id, invoked_time=self.sim.now())
        prefix = next((v.get("file_name_prefix") for v in (layers or {}).values() if v.get("file_name_prefix")), "track")
        rec.raw["output_file_name"] = f"{prefix}_{rec.invoked:%Y%m%dT%H%M%SZ}.webm"
        self.sim.track_recordings.append({"id": rec.id, "meeting_id": meeting_id, "layers": sorted(layers or {}),
                                          "user_ids": user_ids, "invoked_time": rec.raw["invoked_time"]})
        return 200, {"success": True, "data": {"recording": self.render(rec, "active", hostport)}}


# ---------------------------------------------------------------------------------------------
# Control endpoints: /__sim__/...
# ---------------------------------------------------------------------------------------------


def control(sim: Simulator, h: Handler, method: str, path: str, body: bytes) -> None:
    try:
        payload = json_body(body) if method == "POST" else {}
        result = _control_action(sim, method, path, payload)
    except (BadRequest, TypeError, ValueError, KeyError) as exc:
        h.send_json(400, {"success": False, "error": {"code": 400, "message": str(exc)}})
        return
    if result is None:
        h.send_json(404, {"success": False, "error": {"code": 404, "message": "unknown control endpoint"}})
    else:
        h.send_json(200, {"success": True, **result})


def _control_action(sim: Simulator, method: str, path: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    if path == "/__sim__/state" and method == "GET":
        return {"state": sim.state()}
    if path == "/__sim__/faults" and method == "POST":
        if payload.pop("reset", False):
            sim.faults.reset()
        sim.faults.set(**payload)
        return {"faults": sim.faults.to_dict()}
    if path == "/__sim__/recordings" and method == "POST":
        return {"data": sim.add_recording(**payload)}
    if path == "/__sim__/advance" and method == "POST":
        sim.advance(float(payload["seconds"]))
        return {"now": iso(sim.now())}
    return None


# ---------------------------------------------------------------------------------------------
# Bodies and parameters
# ---------------------------------------------------------------------------------------------


def _gateway_page(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return (
        f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


def _challenge_page() -> bytes:
    return (
        "<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title>"
        "<style>body{font-family:sans-serif}</style><script>window._cf_chl_opt={cvId:'3'};</script>"
        "</head><body><h1>Checking your browser before accessing the API</h1>"
        "<p>This process is automatic. Your browser will redirect to your requested content shortly.</p>"
        "</body></html>"
    ).encode()


def json_body(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest("the JSON body must be an object")
    return payload


def _meeting_id(payload: dict[str, Any]) -> str:
    meeting_id = payload.get("meeting_id")
    if not isinstance(meeting_id, str) or not meeting_id:
        raise BadRequest("meeting_id is required")
    return meeting_id


def _one(query: dict[str, list[str]], name: str, default: str) -> str:
    values = query.get(name)
    return values[-1] if values else default


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    text = _one(query, name, "")
    if text == "":
        return default
    try:
        return int(float(text))
    except ValueError:
        raise BadRequest(f"{name} must be a number") from None


def _bool_param(query: dict[str, list[str]], name: str) -> bool | None:
    text = _one(query, name, "").lower()
    if text == "":
        return None
    if text not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false")
    return text == "true"


def _time_param(query: dict[str, list[str]], name: str) -> datetime | None:
    text = _one(query, name, "")
    if not text:
        return None
    parsed = parse_time(text)
    if parsed is None:
        raise BadRequest(f"{name} must be an ISO 8601 timestamp")
    return parsed
