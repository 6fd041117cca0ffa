"""The target registry: a `type` string (RealtimeKit's storage_config.type, plus `local` and the
S3-compatible providers) maps to its adapter. Modules are imported only when a type is used,
and adapters import their SDK only when they connect, so a user archiving to SFTP never needs
the Azure SDK."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from storage.s3.providers import PROVIDERS as S3_PROVIDERS
from storage.settings import TargetSettings
from storage.target import Target

# type -> "module:name". Every S3-compatible provider is one adapter with a class per provider
# profile (storage/s3/providers.py): its name is a table of them, looked up by type.
_ADAPTERS: dict[str, str] = {
    "local": "storage.local:LocalTarget",
    **dict.fromkeys(S3_PROVIDERS, "storage.s3.adapter:ADAPTERS"),
    "azure": "storage.azure.adapter:AzureTarget",
    "gcs": "storage.gcs.adapter:GCSTarget",
    "sftp": "storage.sftp.target:SFTPTarget",
}


def target_types() -> list[str]:
    """Every registered type, in a stable order."""
    return list(_ADAPTERS)


def adapter_class(type_name: str) -> type[Target]:
    try:
        dotted = _ADAPTERS[type_name]
    except KeyError:
        known = ", ".join(_ADAPTERS)
        raise ValueError(f"unknown target type {type_name!r} (known types: {known})") from None
    module_name, name = dotted.split(":")
    found = getattr(importlib.import_module(module_name), name)
    return found[type_name] if isinstance(found, Mapping) else found


def settings_model(type_name: str) -> type[TargetSettings]:
    """The pydantic model that validates a [[targets]] entry of this type."""
    return adapter_class(type_name).settings_model


def build_target(settings: TargetSettings) -> Target:
    return adapter_class(settings.type)(settings)
