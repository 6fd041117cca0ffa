"""Storage: one adapter per backend behind the protocol in storage/target.py. This is the face
the pipeline imports from; nothing in `storage` imports the pipeline."""

from storage.capabilities import Capabilities
from storage.errors import (
    MissingSDK,
    NotFound,
    ObjectConflict,
    PermanentStorageError,
    RetryableStorageError,
    StorageError,
    is_retryable_status,
)
from storage.compare import compare_copy, read_back
from storage.local import nearest_existing
from storage.protection import describe_missing, missing_protection
from storage.registry import build_target, settings_model, target_types
from storage.settings import TargetSettings, check_endpoint
from storage.stream import GrowingFile, SourceFailed
from storage.target import Target
from storage.values import Checksums, LocalFile, ProbeResult, Retention, StoredObject, iso_utc

__all__ = [
    "Capabilities", "Checksums", "LocalFile", "MissingSDK", "NotFound", "ObjectConflict",
    "GrowingFile", "PermanentStorageError", "ProbeResult", "Retention", "RetryableStorageError", "SourceFailed", "StorageError",
    "StoredObject", "Target", "TargetSettings", "build_target", "check_endpoint", "compare_copy", "describe_missing",
    "is_retryable_status", "iso_utc", "missing_protection", "nearest_existing", "read_back", "settings_model", "target_types",
]
