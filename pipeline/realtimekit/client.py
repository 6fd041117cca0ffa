"""RealtimeKitClient: the recordings endpoints over HTTP (list every page, get one, start, active,
pause/resume/stop, track). It retries what is worth retrying (tenacity), fails fast on bad
credentials, and never lets the API token or a presigned query string into a log or an error."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError
from pipeline import retry

from pipeline import __version__

from .answers import check_first_page, decode, error_entries, listing_complete, parse_retry_after, read_paging
from .errors import POST_RETRYABLE_STATUSES, ApiAuthError, ApiError, ApiNotFound, RequestNotSent, is_retryable_status
from .models import (
    ActiveRecording,
    Recording,
    RecordingAction,
    RecordingsPage,
    StartedRecording,
    TrackRecordingResponse,
    short_repr,
)
from .wire import format_api_time

log = logging.getLogger("rtk_archive.api")

# One page of repeats happens when records shift; several in a row mean the server ignores
# page_no (and sends no total_count), and going on would never end.
MAX_PAGES_WITHOUT_NEWS = 3
LIST_DEFAULTS: dict[str, Any] = {
    "status": ("UPLOADED",),
    "start_time": None,
    "end_time": None,
    "meeting_id": None,
    "search": None,
    "expired": None,
    "sort_by": "invokedTime",
    "sort_order": "ASC",
}


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

    def iter_recordings(self, **filters: Any) -> Iterator[Recording]:
        """Every matching recording, across all pages, each id once. Filters (all optional):
        status (default UPLOADED; None for all), start_time, end_time, meeting_id, search,
        expired, sort_by, sort_order (default ASC)."""
        seen: set[str] = set()
        consumed = 0
        pages_without_news = 0
        page_no = 1
        while True:
            body, items = self._list_call(page_no, filters)
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
            if listing_complete(read_paging(body.get("paging")), consumed):
                return
            pages_without_news = 0 if news else pages_without_news + 1
            if pages_without_news >= MAX_PAGES_WITHOUT_NEWS:
                log.warning("pages %d to %d brought no new recordings; stopping the listing there",
                            page_no - pages_without_news + 1, page_no)
                return
            page_no += 1

    def list_page(self, *, page_no: int = 1, **filters: Any) -> RecordingsPage:
        """One raw page (for diagnostics); malformed items are reported and left out of `data`."""
        body, items = self._list_call(page_no, filters)
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
        """POST .../recordings/track with `meeting_id` (and optionally `layers`, `user_ids`);
        the answer is `{success, data: {recording: {...}}}` (see TrackRecordingResponse)."""
        answer = self._call("POST", f"{self._recordings_path}/track", json=body)
        return TrackRecordingResponse.model_validate(answer)

    # -- internals: records --------------------------------------------------------------------

    def _list_call(self, page_no: int, filters: Mapping[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """One page of the list endpoint: (the answer, its items); the first page's paging checked."""
        params = _list_filters(filters) + [("page_no", str(page_no)), ("per_page", str(self.per_page))]
        body = self._call("GET", self._recordings_path, params=params)
        items = body.get("data")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise ApiError(f"GET /{self._recordings_path}: 'data' is not a list ({type(items).__name__})")
        if page_no == 1:
            check_first_page(f"GET /{self._recordings_path}", body.get("paging"), items)
        return body, items

    def _recording_path(self, recording_id: str) -> str:
        return f"{self._recordings_path}/{quote(str(recording_id), safe='')}"

    def _record_from_item(self, item: Any, page_no: int) -> Recording | None:
        """A list item as a Recording, or None after reporting why it is unusable."""
        if not isinstance(item, Mapping):
            self.on_bad_record(f"page {page_no}: list item is not an object: {short_repr(item)}")
            return None
        raw_id = item.get("id")
        if not _usable_id(raw_id):
            self.on_bad_record(f"page {page_no}: list item without a usable id: {short_repr(raw_id)}")
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
        if not _usable_id(data.get("id")):
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
        retrying = retry.policy(retry=retry.on_exception(lambda exc: _should_retry(method, exc)),
                                attempts=self.max_retries + 1, stop=retry.before_delay(self.max_retry_seconds),
                                wait=self._wait, before_sleep=self._log_retry, sleep=self.sleep, reraise=False)
        try:
            return retrying(self._call_once, method, path, params, json)
        except retry.GaveUp as exc:
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
            raise RequestNotSent(self._scrub(f"{where}: cannot connect ({exc})"), retryable=True) from None
        except httpx.TransportError as exc:
            raise ApiError(
                self._scrub(f"{where}: connection broke ({type(exc).__name__}: {exc})"), retryable=True
            ) from None
        return self._interpret(where, response)

    def _interpret(self, where: str, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        body, snippet = decode(response.content)
        api_errors = error_entries(body) if body is not None else ()
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
            error_type = ApiNotFound if status == 404 else ApiError
            raise error_type(
                f"{where}: HTTP {status}: {detail or response.reason_phrase or 'no details'}",
                status_code=status,
                retryable=is_retryable_status(status),
                retry_after=parse_retry_after(response.headers.get("Retry-After"), time.time()),
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

    def _wait(self, state: retry.State) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ApiError) and exc.retry_after is not None:
            return exc.retry_after
        # Exponential from backoff_initial, capped, with up to 25 % jitter downwards (as the SDKs).
        base = min(self.backoff_initial * 2 ** (state.attempt_number - 1), self.backoff_max)
        return base * (1 - 0.25 * random.random())

    def _log_retry(self, state: retry.State) -> None:
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


def _should_retry(method: str, exc: BaseException) -> bool:
    if not isinstance(exc, ApiError) or not exc.retryable:
        return False
    if method.upper() != "POST":
        return True
    return isinstance(exc, RequestNotSent) or exc.status_code in POST_RETRYABLE_STATUSES


def _usable_id(raw_id: Any) -> bool:
    return not isinstance(raw_id, bool) and isinstance(raw_id, (str, int)) and bool(str(raw_id).strip())


def _log_bad_record(reason: str) -> None:
    log.warning("skipping a malformed recording in the list: %s", reason)


def _list_filters(filters: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Query parameters for the list endpoint; status is repeated as the official SDKs send it."""
    unknown = set(filters) - set(LIST_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown list filters: {', '.join(sorted(unknown))}")
    params: list[tuple[str, str]] = []
    for name, value in {**LIST_DEFAULTS, **filters}.items():
        if name == "status":
            statuses: Iterable[str] = [value] if isinstance(value, str) else list(value or ())
            params += [("status", str(s)) for s in statuses]
        elif name in ("start_time", "end_time"):
            if value is not None:
                params.append((name, format_api_time(value)))
        elif name == "expired":
            if value is not None:
                params.append(("expired", "true" if value else "false"))
        elif value:
            params.append((name, str(value)))
    return params
