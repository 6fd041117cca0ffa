"""Pydantic models of the RealtimeKit API's answers. They never raise on a bad field (only on a
missing id): a malformed value becomes None plus a "field: why" line in `problems`.

The API is documented loosely (types drift between SDKs, `file_size` is a number in REST and a
string in webhooks), so every field type below is pydantic's own lax validation wrapped in
`_tolerate`, which turns a failure into a note instead of an error. Unknown fields are kept;
storage credentials never appear in repr() or dumps.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    OnErrorOmit,
    PrivateAttr,
    ValidationError,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_core.core_schema import ValidatorFunctionWrapHandler

from .wire import parse_api_time, redact_url

# No size or duration is larger; the ledger (SQLite INTEGER) could not store one that is.
MAX_API_NUMBER = 2**63 - 1


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
# Field types: pydantic's lax validation, a failure noted instead of raised
# ---------------------------------------------------------------------------------------------


def short_repr(value: Any, limit: int = 60) -> str:
    """repr() cut to `limit` characters, for messages about a value the API sent."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Unreadable:
    """Stands in for a value pydantic could not read, until the model notes it and sets None."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


_NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type", "dict_type"})


def _tolerate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        if error["type"] in _NOT_AN_OBJECT:
            return _Unreadable(f"expected an object, got {short_repr(value)}")
        if error["type"] == "malformed_timestamp":
            return _Unreadable(error["msg"])
        return _Unreadable(f"{error['msg']} (got {short_repr(value)})")


def _not_a_boolean(value: Any) -> Any:
    # Lax mode would read True as 1; a boolean where a number belongs is a malformed value.
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "a boolean is not a number")
    return value


def _whole_if_integral(value: int | float) -> int | float:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _api_time(value: Any) -> datetime | None:
    if isinstance(value, str) and not value.strip():
        return None  # an empty string means "not set", not a malformed value
    try:
        return parse_api_time(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise PydanticCustomError(
            "malformed_timestamp", "malformed timestamp {value} ({reason})", {"value": short_repr(value), "reason": str(exc)}
        ) from None


_T = TypeVar("_T")
Lenient = Annotated[_T, WrapValidator(_tolerate)]  # e.g. Lenient[Meeting]: an object field
Text = Lenient[str]  # numbers become their text (a numeric id is still usable)
Flag = Lenient[bool]
Timestamp = Lenient[Annotated[datetime | None, BeforeValidator(_api_time)]]  # ISO 8601 or epoch s/ms
# A size or count: a number or a numeric string ("2044680"), whole, not negative.
Count = Lenient[Annotated[int, Field(ge=0, le=MAX_API_NUMBER), BeforeValidator(_not_a_boolean)]]
# A duration: like Count, fractions allowed (60.0 reads as 60).
Amount = Lenient[
    Annotated[
        int | float,
        Field(ge=0, le=MAX_API_NUMBER, allow_inf_nan=False),
        BeforeValidator(_not_a_boolean),
        AfterValidator(_whole_if_integral),
    ]
]


class ApiModel(BaseModel):
    """Base of every answer model: extra fields kept; unreadable values become None, noted in
    `problems` (nested ones as "meeting.updated_at: ...")."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, coerce_numbers_to_str=True)

    _problems: list[str] = PrivateAttr(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return self._problems

    @model_validator(mode="after")
    def _note_problems(self) -> ApiModel:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, _Unreadable):
                setattr(self, name, None)
                self._problems.append(f"{name}: {value.problem}")
            elif isinstance(value, ApiModel):
                self._problems.extend(f"{name}.{problem}" for problem in value.problems)
        return self


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


class Meeting(ApiModel):
    id: Text | None = None
    title: Text | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    status: Text | None = None
    live_stream_on_start: Flag | None = None
    persist_chat: Flag | None = None
    record_on_start: Flag | None = None
    session_keep_alive_time_in_secs: Amount | None = None
    summarize_on_end: Flag | None = None


class Caller(ApiModel):
    name: Text | None = None
    type: Text | None = None
    # Spelled `user_Id` by the REST API, `user_id` by the Python SDK.
    user_Id: Text | None = Field(default=None, validation_alias=AliasChoices("user_Id", "user_id", "userId"))


class TriggerReason(ApiModel):
    """`start_reason` / `stop_reason`: who (caller) and why (reason)."""

    caller: Lenient[Caller] | None = None
    reason: Text | None = None


class StorageConfig(ApiModel):
    """Where RealtimeKit itself uploaded the recording. May hold credentials: never log it.

    Secrets are kept on the object but left out of repr() and model_dump(); unknown fields are
    dropped (they might be credentials under a name we don't know).
    """

    model_config = ConfigDict(extra="ignore")

    type: Text | None = None
    bucket: Text | None = None
    region: Text | None = None
    path: Text | None = None
    host: Text | None = None
    port: Count | None = None
    username: Text | None = None
    auth_method: Text | None = None
    access_key: Text | None = Field(default=None, exclude=True, repr=False)
    # Some docs examples misspell it `secret_key`.
    secret: Text | None = Field(
        default=None, exclude=True, repr=False, validation_alias=AliasChoices("secret", "secret_key")
    )
    password: Text | None = Field(default=None, exclude=True, repr=False)
    private_key: Text | None = Field(default=None, exclude=True, repr=False)


class Recording(ApiModel):
    """One recording as any endpoint returns it (list item, get-one, start, stop, active, track).
    `id` is the one field that must be there: without it a record is unusable (ValidationError)."""

    _URL_FIELDS: ClassVar[tuple[str, ...]] = ("download_url", "audio_download_url")

    id: str
    status: Text | None = ""  # "" (noted as missing) rather than None when absent or unreadable
    download_url: Text | None = None
    audio_download_url: Text | None = None
    download_url_expiry: Timestamp | None = None
    file_size: Count | None = None
    output_file_name: Text | None = None
    invoked_time: Timestamp | None = None
    started_time: Timestamp | None = None
    stopped_time: Timestamp | None = None
    session_id: Text | None = None
    recording_duration: Amount | None = None
    meeting: Lenient[Meeting] | None = None
    start_reason: Lenient[TriggerReason] | None = None
    stop_reason: Lenient[TriggerReason] | None = None
    storage_config: Lenient[StorageConfig] | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _note_missing_status(self) -> Recording:
        if not self.status:
            self.status = ""
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


class Paging(ApiModel):
    total_count: Count | None = None
    start_offset: Count | None = None
    end_offset: Count | None = None


class RecordingsPage(ApiModel):
    """One page of the list endpoint. `data` holds only the well-formed records."""

    success: Flag | None = None
    data: list[OnErrorOmit[Recording]] = Field(default_factory=list)
    paging: Lenient[Paging] | None = None


class StatusChangeResponse(ApiModel):
    """Answer of PUT .../recordings/{id} (pause/resume/stop)."""

    success: Flag | None = None
    data: Lenient[Recording] | None = None


class TrackRecordingData(ApiModel):
    recording: Lenient[Recording] | None = None


class TrackRecordingResponse(ApiModel):
    """Answer of POST .../recordings/track: `{success, data: {recording: {...}}}`.

    The seeds' page documents no answer for this endpoint; this follows the official Python SDK's
    RecordingStartTrackRecordingResponse (cloudflare-python, src/cloudflare/types/realtime_kit/
    recording_start_track_recording_response.py: `data: Optional[Data]`, `Data.recording:
    DataRecording` with the fields of an active recording) and Cloudflare's current API reference
    for start_track_recording (`{success, data}`; `layers` and `user_ids` optional in the body).
    cloudflare-go (v6.6.0) declares no answer type for it at all.
    """

    success: Flag | None = None
    data: Lenient[TrackRecordingData] | None = None
