"""The RealtimeKit recordings API: typed answers (models), the HTTP client, its errors.

Importing this package stays cheap: the constants and errors load at once, the pydantic models
and the client (httpx, tenacity) only when first used, so loading the config does not pay for HTTP.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import ApiAuthError, ApiError, ApiNotFound, is_retryable_status
from .wire import DEFAULT_BASE_URL, RETENTION, format_api_time, parse_api_time, redact_url

if TYPE_CHECKING:
    from .client import RealtimeKitClient
    from .models import (
        ActiveRecording,
        Caller,
        Meeting,
        Paging,
        Recording,
        RecordingAction,
        RecordingsPage,
        RecordingStatus,
        StartedRecording,
        StatusChangeResponse,
        StorageConfig,
        TrackRecordingData,
        TrackRecordingResponse,
        TriggerReason,
    )

_LAZY = {
    "RealtimeKitClient": "client",
    **dict.fromkeys(
        (
            "ActiveRecording",
            "Caller",
            "Meeting",
            "Paging",
            "Recording",
            "RecordingAction",
            "RecordingStatus",
            "RecordingsPage",
            "StartedRecording",
            "StatusChangeResponse",
            "StorageConfig",
            "TrackRecordingData",
            "TrackRecordingResponse",
            "TriggerReason",
        ),
        "models",
    ),
}

__all__ = [
    "ApiAuthError",
    "ApiError",
    "ApiNotFound",
    "DEFAULT_BASE_URL",
    "RETENTION",
    "format_api_time",
    "is_retryable_status",
    "parse_api_time",
    "redact_url",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value
