"""Typed models and an HTTP client for the RealtimeKit recordings API.

The API is documented loosely (types drift between SDKs, `file_size` is a number in REST and a
string in webhooks, error envelopes come in two shapes, gateways answer in HTML), so the models
here never raise on a bad field: they keep what they can and note the rest in `problems`. The
client retries what is worth retrying (with tenacity), fails fast on bad credentials, and never
lets the API token or a presigned query string reach a log line or an exception message.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import re
import time
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception, stop_after_attempt
from tenacity import stop_before_delay

from . import __version__

__all__ = [
    "ActiveRecording",
    "ApiAuthError",
    "ApiError",
    "ApiNotFound",
    "Caller",
    "DEFAULT_BASE_URL",
    "Meeting",
    "Paging",
    "RETENTION",
    "RealtimeKitClient",
    "Recording",
    "RecordingAction",
    "RecordingStatus",
    "RecordingsPage",
    "StartedRecording",
    "StatusChangeResponse",
    "StorageConfig",
    "TrackRecordingResponse",
    "TriggerReason",
    "format_api_time",
    "parse_api_time",
    "redact_url",
]

log = logging.getLogger("rtk_archive.api")

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
# RealtimeKit keeps a recording (and signs its URL) for 7 days after it stopped.
RETENTION = timedelta(days=7)
# The official SDKs honour Retry-After only up to a minute; Cloudflare can ask for 5 minutes,
# and the retry budget (max_retry_seconds) bounds the total anyway.
RETRY_AFTER_CAP = 60.0
RETRYABLE_STATUSES = frozenset({408, 409, 429})
SNIPPET_CHARS = 200
MAX_PAGES_WITHOUT_NEWS = 3


class RecordingStatus(StrEnum):
    """The documented statuses. `Recording.status` stays a plain str so a new one never crashes."""

    INVOKED = "INVOKED"
    RECORDING = "RECORDING"
    UPLOADING = "UPLOADING"
    UPLOADED = "UPLOADED"
    ERRORED = "ERRORED"
    PAUSED = "PAUSED"


class RecordingAction(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"


# ---------------------------------------------------------------------------------------------
# Small helpers shared with the rest of the pipeline
# ---------------------------------------------------------------------------------------------


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
    """ISO 8601 in UTC with milliseconds and `Z`, as the API writes it. Naive means UTC."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Lenient field coercion: each returns (value, problem-or-None) and never raises.
# ---------------------------------------------------------------------------------------------


def _coerce_datetime(value: Any) -> tuple[datetime | None, str | None]:
    if isinstance(value, str) and not value.strip():
        return None, None  # an empty string means "not set", not a malformed value
    try:
        return parse_api_time(value), None
    except (ValueError, OverflowError, OSError) as exc:
        return None, f"malformed timestamp {_short(value)} ({exc})"


# No size or duration is larger; the ledger (SQLite INTEGER) could not store one that is.
MAX_API_NUMBER = 2**63 - 1


def _coerce_number(value: Any, *, integral: bool, non_negative: bool) -> tuple[Any, str | None]:
    number: int | float
    if isinstance(value, bool):
        return None, f"not a number: {_short(value)}"
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None, f"not a number: {_short(value)}"
    else:
        return None, f"not a number: {_short(value)}"
    if isinstance(number, float):
        if not math.isfinite(number):
            return None, f"not a finite number: {_short(value)}"
        if number.is_integer():
            number = int(number)
        elif integral:
            return None, f"not a whole number: {_short(value)}"
    if non_negative and number < 0:
        return None, f"negative value: {_short(value)}"
    if abs(number) > MAX_API_NUMBER:
        return None, f"out of range: {_short(value)}"
    return number, None


def _coerce_bool(value: Any) -> tuple[bool | None, str | None]:
    if isinstance(value, bool):
        return value, None
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true", None
    if isinstance(value, int) and value in (0, 1):
        return bool(value), None
    return None, f"not a boolean: {_short(value)}"


def _coerce_str(value: Any) -> tuple[str | None, str | None]:
    if isinstance(value, str):
        return value, None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value), None  # e.g. a numeric id: still usable as text
    return None, f"not a string: {_short(value)}"


def _field_kind(annotation: Any) -> str | None:
    """Which lenient coercion a field needs, read from its type annotation."""
    args = typing.get_args(annotation)
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    options = {a for a in args if a is not type(None)} if is_union else {annotation}
    if options == {datetime}:
        return "datetime"
    if options == {int}:
        return "int"
    if options <= {int, float}:
        return "number"
    if options == {bool}:
        return "bool"
    if options == {str}:
        return "str"
    if len(options) == 1:
        only = next(iter(options))
        if isinstance(only, type) and issubclass(only, BaseModel):
            return "model"
    return None


class _Lenient(BaseModel):
    """Base of every API model: extra fields kept, bad values become None plus a `problems` note."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    # Fields whose value can never be negative (sizes, durations).
    _NON_NEGATIVE: ClassVar[frozenset[str]] = frozenset()

    problems: list[str] = Field(default_factory=list, exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _tolerate(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data  # pydantic reports it; callers check for objects before validating
        data = dict(data)
        problems: list[str] = []
        for name, field in cls.model_fields.items():
            if name == "problems":
                continue
            key = _present_key(data, name, field.validation_alias)
            if key is None or data[key] is None:
                continue
            kind = _field_kind(field.annotation)
            value, problem = _coerce(kind, data[key], name in cls._NON_NEGATIVE)
            if problem:
                problems.append(f"{name}: {problem}")
            data[key] = value
        data["problems"] = problems
        return data

    @model_validator(mode="after")
    def _collect_nested_problems(self) -> _Lenient:
        # Nested models note their own problems; surface them on the outer object too.
        for name in type(self).model_fields:
            nested = getattr(self, name, None)
            if isinstance(nested, _Lenient) and nested.problems:
                self.problems.extend(f"{name}.{p}" for p in nested.problems)
        return self


def _present_key(data: dict[str, Any], name: str, alias: Any) -> str | None:
    candidates = [name]
    if isinstance(alias, AliasChoices):
        candidates += [c for c in alias.choices if isinstance(c, str)]
    elif isinstance(alias, str):
        candidates.append(alias)
    return next((c for c in candidates if c in data), None)


def _coerce(kind: str | None, value: Any, non_negative: bool) -> tuple[Any, str | None]:
    if kind == "datetime":
        return _coerce_datetime(value)
    if kind in ("int", "number"):
        return _coerce_number(value, integral=kind == "int", non_negative=non_negative)
    if kind == "bool":
        return _coerce_bool(value)
    if kind == "str":
        return _coerce_str(value)
    if kind == "model" and not isinstance(value, (Mapping, BaseModel)):
        return None, f"expected an object, got {_short(value)}"
    return value, None


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


class Meeting(_Lenient):
    id: str | None = None
    title: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    status: str | None = None
    live_stream_on_start: bool | None = None
    persist_chat: bool | None = None
    record_on_start: bool | None = None
    session_keep_alive_time_in_secs: int | float | None = None
    summarize_on_end: bool | None = None


class Caller(_Lenient):
    name: str | None = None
    type: str | None = None
    # Spelled `user_Id` by the REST API, `user_id` by the Python SDK.
    user_Id: str | None = Field(default=None, validation_alias=AliasChoices("user_Id", "user_id", "userId"))


class TriggerReason(_Lenient):
    """`start_reason` / `stop_reason`: who (caller) and why (reason)."""

    caller: Caller | None = None
    reason: str | None = None


_STORAGE_SECRETS = ("access_key", "secret", "password", "private_key")


class StorageConfig(_Lenient):
    """Where RealtimeKit itself uploaded the recording. May hold credentials: never log it.

    Secrets are kept on the object but left out of repr() and model_dump(); unknown fields are
    dropped (they might be credentials under a name we don't know).
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    type: str | None = None
    bucket: str | None = None
    region: str | None = None
    path: str | None = None
    host: str | None = None
    port: int | None = None
    username: str | None = None
    auth_method: str | None = None
    access_key: str | None = Field(default=None, exclude=True, repr=False)
    # Some docs examples misspell it `secret_key`.
    secret: str | None = Field(
        default=None, exclude=True, repr=False, validation_alias=AliasChoices("secret", "secret_key")
    )
    password: str | None = Field(default=None, exclude=True, repr=False)
    private_key: str | None = Field(default=None, exclude=True, repr=False)


class Recording(_Lenient):
    """One recording as any endpoint returns it (list item, get-one, start, stop, active)."""

    _NON_NEGATIVE: ClassVar[frozenset[str]] = frozenset({"file_size", "recording_duration"})
    _URL_FIELDS: ClassVar[tuple[str, ...]] = ("download_url", "audio_download_url")

    id: str
    status: str = ""
    download_url: str | None = None
    audio_download_url: str | None = None
    download_url_expiry: datetime | None = None
    file_size: int | None = None
    output_file_name: str | None = None
    invoked_time: datetime | None = None
    started_time: datetime | None = None
    stopped_time: datetime | None = None
    session_id: str | None = None
    recording_duration: int | float | None = None
    meeting: Meeting | None = None
    start_reason: TriggerReason | None = None
    stop_reason: TriggerReason | None = None
    storage_config: StorageConfig | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _note_missing_status(self) -> Recording:
        if not self.status:
            self.problems.append("status: missing")
        return self

    @property
    def meeting_id(self) -> str | None:
        return self.meeting.id if self.meeting is not None else None

    @property
    def meeting_title(self) -> str | None:
        return self.meeting.title if self.meeting is not None else None

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # A repr ends up in logs and tracebacks: show presigned URLs without their signature.
        for name, value in super().__repr_args__():
            shown = redact_url(value) if name in self._URL_FIELDS and isinstance(value, str) else value
            yield name, shown


class ActiveRecording(Recording):
    """Answer of GET .../recordings/active-recording/{meeting_id} (a subset of the fields)."""


class StartedRecording(Recording):
    """Answer of POST .../recordings."""


class Paging(_Lenient):
    total_count: int | None = None
    start_offset: int | None = None
    end_offset: int | None = None


class RecordingsPage(_Lenient):
    """One page of the list endpoint. `data` holds only the well-formed records."""

    success: bool | None = None
    data: list[Recording] = Field(default_factory=list)
    paging: Paging | None = None


class StatusChangeResponse(_Lenient):
    """Answer of PUT .../recordings/{id} (pause/resume/stop)."""

    success: bool | None = None
    data: Recording | None = None


class TrackRecordingResponse(_Lenient):
    """Answer of POST .../recordings/track: undocumented, so `data` is whatever came back."""

    success: bool | None = None
    data: Any = None


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A call to the RealtimeKit API failed. `str()` is one line that says what and why."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        api_errors: tuple[str, ...] = (),
    ) -> None:
        self.message = " ".join(message.split())  # one line, whatever the server sent
        super().__init__(self.message)
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after = retry_after
        self.api_errors = api_errors

    def __str__(self) -> str:
        return self.message


class ApiAuthError(ApiError):
    """401/403: the token is wrong or lacks permission. Never retried."""


class ApiNotFound(ApiError):
    """404: no such recording (or meeting, for the active-recording endpoint)."""


# ---------------------------------------------------------------------------------------------
# Reading answers
# ---------------------------------------------------------------------------------------------

_TAG = re.compile(r"<[^>]*>")
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def _body_snippet(text: str) -> str:
    """At most ~200 chars of a non-JSON body, without tags, for an error message."""
    text = _SCRIPT.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = " ".join(text.split())
    if len(text) > SNIPPET_CHARS:
        text = text[: SNIPPET_CHARS - 3] + "..."
    return text or "(empty body)"


def _error_entries(body: Mapping[str, Any]) -> tuple[str, ...]:
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


def _parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: either delta-seconds or an HTTP-date."""
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


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------

# A POST that may have reached the server is not retried: starting a recording twice is worse
# than reporting a failure. Only "surely not processed" answers are retried for POST.
_POST_RETRYABLE_STATUSES = frozenset({429})


class RealtimeKitClient:
    """Synchronous client for the recordings endpoints. Use as a context manager or close()."""

    def __init__(
        self,
        *,
        base_url: str,
        account_id: str,
        app_id: str,
        api_token: str,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        per_page: int = 100,
        max_retries: int = 6,
        max_retry_seconds: float = 300.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_token:
            raise ValueError("an API token is required")
        if per_page < 1:
            raise ValueError("per_page must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.account_id = account_id
        self.app_id = app_id
        self.per_page = per_page
        self.max_retries = max_retries
        self.max_retry_seconds = max_retry_seconds
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        # Hooks: where malformed list items are reported, and how retries wait (tests swap it).
        self.on_bad_record: Callable[[str], None] = _log_bad_record
        self.sleep: Callable[[float], None] = time.sleep
        self._token = api_token
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            headers={
                "Authorization": f"Bearer {api_token}",
                "User-Agent": f"rtk-archive/{__version__}",
                "Accept": "application/json",
            },
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
        )
        self._recordings_path = (
            f"accounts/{quote(account_id, safe='')}/realtime/kit/{quote(app_id, safe='')}/recordings"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RealtimeKitClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RealtimeKitClient(base_url={self.base_url!r}, account_id={self.account_id!r}, app_id={self.app_id!r})"

    # -- endpoints ---------------------------------------------------------------------------

    def iter_recordings(
        self,
        *,
        status: str | Iterable[str] | None = ("UPLOADED",),
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
        meeting_id: str | None = None,
        search: str | None = None,
        expired: bool | None = None,
        sort_by: str = "invokedTime",
        sort_order: str = "ASC",
    ) -> Iterator[Recording]:
        """Every matching recording, across all pages, each id once."""
        filters = _list_filters(status, start_time, end_time, meeting_id, search, expired, sort_by, sort_order)
        seen: set[str] = set()
        consumed = 0
        pages_without_news = 0
        page_no = 1
        while True:
            params = filters + [("page_no", str(page_no)), ("per_page", str(self.per_page))]
            body = self._call("GET", self._recordings_path, params=params)
            items = body.get("data")
            if items is None:
                items = []
            if not isinstance(items, list):
                raise ApiError(f"GET /{self._recordings_path}: 'data' is not a list ({type(items).__name__})")
            if not items:
                return
            consumed += len(items)
            news = 0
            for item in items:
                recording = self._record_from_item(item, page_no)
                if recording is not None and recording.id not in seen:
                    seen.add(recording.id)
                    news += 1
                    yield recording
            if _listing_complete(body.get("paging"), consumed):
                return
            # One page of repeats happens when records shift; several in a row mean the server
            # ignores page_no (and sends no total_count), and going on would never end.
            pages_without_news = 0 if news else pages_without_news + 1
            if pages_without_news >= MAX_PAGES_WITHOUT_NEWS:
                log.warning("pages %d to %d brought no new recordings; stopping the listing there",
                            page_no - pages_without_news + 1, page_no)
                return
            page_no += 1

    def list_page(self, *, page_no: int = 1, **filters: Any) -> RecordingsPage:
        """One raw page (for diagnostics); malformed items are reported and left out of `data`."""
        params = _list_filters(**_with_list_defaults(filters)) + [
            ("page_no", str(page_no)),
            ("per_page", str(self.per_page)),
        ]
        body = self._call("GET", self._recordings_path, params=params)
        data = body.get("data")
        items: list[Any] = data if isinstance(data, list) else []
        good = [r for r in (self._record_from_item(i, page_no) for i in items) if r is not None]
        return RecordingsPage.model_validate({**body, "data": good})

    def get_recording(self, recording_id: str) -> Recording:
        body = self._call("GET", self._recording_path(recording_id))
        return self._data_as(Recording, body, f"GET recording {recording_id}")

    def get_active_recording(self, meeting_id: str) -> ActiveRecording | None:
        """The meeting's running recording; None when the answer carries no data."""
        path = f"{self._recordings_path}/active-recording/{quote(meeting_id, safe='')}"
        body = self._call("GET", path)
        if body.get("data") is None:
            return None
        return self._data_as(ActiveRecording, body, f"GET active recording of meeting {meeting_id}")

    def start_recording(self, **body: Any) -> StartedRecording:
        answer = self._call("POST", self._recordings_path, json=body)
        return self._data_as(StartedRecording, answer, "POST start recording")

    def pause_resume_stop(self, recording_id: str, action: str | RecordingAction) -> Recording:
        action = str(action).lower()
        if action not in {a.value for a in RecordingAction}:
            raise ValueError(f"action must be pause, resume or stop, not {action!r}")
        answer = self._call("PUT", self._recording_path(recording_id), json={"action": action})
        return self._data_as(Recording, answer, f"PUT {action} recording {recording_id}")

    def start_track_recording(self, **body: Any) -> TrackRecordingResponse:
        answer = self._call("POST", f"{self._recordings_path}/track", json=body)
        return TrackRecordingResponse.model_validate(answer)

    # -- internals: records --------------------------------------------------------------------

    def _recording_path(self, recording_id: str) -> str:
        return f"{self._recordings_path}/{quote(str(recording_id), safe='')}"

    def _record_from_item(self, item: Any, page_no: int) -> Recording | None:
        """A list item as a Recording, or None after reporting why it is unusable."""
        if not isinstance(item, Mapping):
            self.on_bad_record(f"page {page_no}: list item is not an object: {_short(item)}")
            return None
        raw_id = item.get("id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not str(raw_id).strip():
            self.on_bad_record(f"page {page_no}: list item without a usable id: {_short(raw_id)}")
            return None
        try:
            return Recording.model_validate(item)
        except ValidationError as exc:
            self.on_bad_record(f"page {page_no}: recording {raw_id!r} unreadable: {exc.error_count()} errors")
            return None

    def _data_as(self, model: type[Recording], body: Mapping[str, Any], what: str) -> Any:
        data = body.get("data")
        if not isinstance(data, Mapping):
            raise ApiError(f"{what}: the answer has no recording object in 'data'")
        if not isinstance(data.get("id"), (str, int)) or not str(data.get("id")).strip():
            raise ApiError(f"{what}: the recording in the answer has no id")
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ApiError(f"{what}: unreadable recording ({exc.error_count()} errors)") from None

    # -- internals: HTTP with retries ------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        json: Any = None,
    ) -> dict[str, Any]:
        """One API call, retried per policy; returns the decoded success envelope."""
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1) | stop_before_delay(self.max_retry_seconds),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: _should_retry(method, exc)),
            before_sleep=self._log_retry,
            sleep=self.sleep,
        )
        try:
            return retrying(self._call_once, method, path, params, json)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            attempts = exc.last_attempt.attempt_number
            if not isinstance(last, ApiError):  # only ApiErrors are retried; keep mypy honest
                raise
            raise type(last)(
                f"{last} (gave up after {attempts} attempt{'s' if attempts != 1 else ''})",
                status_code=last.status_code,
                retryable=last.retryable,
                retry_after=last.retry_after,
                api_errors=last.api_errors,
            ) from None

    def _call_once(
        self, method: str, path: str, params: list[tuple[str, str]] | None, json_body: Any
    ) -> dict[str, Any]:
        where = f"{method} /{path}"
        try:
            # Pairs, not a dict, so repeated keys (status=A&status=B) stay repeated.
            response = self._http.request(method, path, params=tuple(params or ()), json=json_body)
        except httpx.TimeoutException as exc:
            raise ApiError(self._scrub(f"{where}: timed out ({type(exc).__name__})"), retryable=True) from None
        except httpx.ConnectError as exc:
            # Not sent at all, so safe to retry whatever the method.
            raise _ConnectFailed(self._scrub(f"{where}: cannot connect ({exc})"), retryable=True) from None
        except httpx.TransportError as exc:
            raise ApiError(
                self._scrub(f"{where}: connection broke ({type(exc).__name__}: {exc})"), retryable=True
            ) from None
        return self._interpret(where, response)

    def _interpret(self, where: str, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        body, snippet = _decode(response)
        api_errors = _error_entries(body) if body is not None else ()
        detail = "; ".join(api_errors) if api_errors else (snippet or "")
        detail = self._scrub(detail)
        if status in (401, 403):
            raise ApiAuthError(
                f"{where}: HTTP {status}: the API token is wrong, expired, or lacks the "
                f'"Realtime" / "Realtime Admin" permission for this account (server said: {detail or "nothing"})',
                status_code=status,
                api_errors=api_errors,
            )
        if status >= 400:
            retryable = status in RETRYABLE_STATUSES or status >= 500
            error_type = ApiNotFound if status == 404 else ApiError
            raise error_type(
                f"{where}: HTTP {status}: {detail or response.reason_phrase or 'no details'}",
                status_code=status,
                retryable=retryable,
                retry_after=_parse_retry_after(response.headers.get("Retry-After"), time.time()),
                api_errors=api_errors,
            )
        if body is None:
            # A gateway or captive page instead of JSON, or a truncated body: worth another try.
            raise ApiError(
                f"{where}: HTTP {status} but the body is not JSON: {self._scrub(snippet or '')}",
                status_code=status,
                retryable=True,
            )
        if body.get("success") is False:
            raise ApiError(
                f"{where}: the API answered success=false: {detail or 'no error message'}",
                status_code=status,
                api_errors=api_errors,
            )
        return body

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ApiError) and exc.retry_after is not None:
            return exc.retry_after
        # Exponential from backoff_initial, capped, with up to 25 % jitter downwards (as the SDKs).
        base = min(self.backoff_initial * 2 ** (state.attempt_number - 1), self.backoff_max)
        return base * (1 - 0.25 * random.random())

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s; retry %d of %d in %.1f s",
            exc,
            state.attempt_number,
            self.max_retries,
            state.upcoming_sleep,
        )

    def _scrub(self, text: str) -> str:
        """Belt and braces: a server that echoes the token must not get it into our messages."""
        return text.replace(self._token, "[redacted]") if self._token else text


class _ConnectFailed(ApiError):
    """The request never left: safe to retry even for POST."""


def _should_retry(method: str, exc: BaseException) -> bool:
    if not isinstance(exc, ApiError) or not exc.retryable:
        return False
    if method.upper() != "POST":
        return True
    return isinstance(exc, _ConnectFailed) or exc.status_code in _POST_RETRYABLE_STATUSES


def _decode(response: httpx.Response) -> tuple[dict[str, Any] | None, str | None]:
    """(JSON object, None) or (None, a short text snippet) when the body is not a JSON object."""
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None, _body_snippet(response.content.decode("utf-8", errors="replace"))
    if not isinstance(body, dict):
        return None, _body_snippet(response.text)
    return body, None


def _log_bad_record(reason: str) -> None:
    log.warning("skipping a malformed recording in the list: %s", reason)


def _listing_complete(paging: Any, consumed: int) -> bool:
    """True once total_count is reached, by the server's end_offset or by items seen."""
    if not isinstance(paging, Mapping):
        return False
    total, _ = _coerce_number(paging.get("total_count"), integral=True, non_negative=True)
    if total is None:
        return False
    end, _ = _coerce_number(paging.get("end_offset"), integral=True, non_negative=True)
    return max(end or 0, consumed) >= total


def _with_list_defaults(filters: dict[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "status": ("UPLOADED",),
        "start_time": None,
        "end_time": None,
        "meeting_id": None,
        "search": None,
        "expired": None,
        "sort_by": "invokedTime",
        "sort_order": "ASC",
    }
    unknown = set(filters) - set(defaults)
    if unknown:
        raise TypeError(f"unknown list filters: {', '.join(sorted(unknown))}")
    return {**defaults, **filters}


def _list_filters(
    status: str | Iterable[str] | None,
    start_time: datetime | str | None,
    end_time: datetime | str | None,
    meeting_id: str | None,
    search: str | None,
    expired: bool | None,
    sort_by: str | None,
    sort_order: str | None,
) -> list[tuple[str, str]]:
    """Query parameters for the list endpoint; status is repeated as the official SDKs send it."""
    params: list[tuple[str, str]] = []
    statuses = [status] if isinstance(status, str) else list(status or ())
    params += [("status", str(s)) for s in statuses]
    if start_time is not None:
        params.append(("start_time", format_api_time(start_time)))
    if end_time is not None:
        params.append(("end_time", format_api_time(end_time)))
    if meeting_id:
        params.append(("meeting_id", meeting_id))
    if search:
        params.append(("search", search))
    if expired is not None:
        params.append(("expired", "true" if expired else "false"))
    if sort_by:
        params.append(("sort_by", sort_by))
    if sort_order:
        params.append(("sort_order", sort_order))
    return params
