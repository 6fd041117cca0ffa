"""Storage adapters: one module per backend behind the small protocol in storage.base."""

from storage.base import (
    Checksums,
    LocalFile,
    MissingSDK,
    NotFound,
    ObjectConflict,
    PermanentStorageError,
    ProbeResult,
    Retention,
    RetryableStorageError,
    StorageError,
    StoredObject,
    Target,
    TargetSettings,
    check_endpoint,
)
from storage.registry import build_target, settings_model, target_types

__all__ = [
    "Checksums", "LocalFile", "MissingSDK", "NotFound", "ObjectConflict", "PermanentStorageError", "ProbeResult",
    "Retention", "RetryableStorageError", "StorageError", "StoredObject", "Target", "TargetSettings",
    "build_target", "check_endpoint", "settings_model", "target_types",
]
