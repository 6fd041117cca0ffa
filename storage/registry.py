"""The target registry: a `type` string (RealtimeKit's storage_config.type, plus `local`) maps
to the adapter class. Modules are imported only when a type is used, and adapters import their
SDK only when they connect, so a user archiving to SFTP never needs the Azure SDK."""

from __future__ import annotations

import importlib

from storage.base import Target, TargetSettings

_ADAPTERS: dict[str, str] = {
    "local": "storage.local:LocalTarget",
    "aws": "storage.s3:S3Target",
    "digitalocean": "storage.s3:SpacesTarget",
    "azure": "storage.azure:AzureTarget",
    "gcs": "storage.gcs:GCSTarget",
    "sftp": "storage.sftp:SFTPTarget",
}


def target_types() -> list[str]:
    """Every registered type, in a stable order."""
    return list(_ADAPTERS)


def register(type_name: str, dotted: str) -> None:
    """Add an adapter ("package.module:Class"); a type that is already taken is refused."""
    if type_name in _ADAPTERS:
        raise ValueError(f"storage type {type_name!r} is already registered")
    _ADAPTERS[type_name] = dotted


def adapter_class(type_name: str) -> type[Target]:
    try:
        dotted = _ADAPTERS[type_name]
    except KeyError:
        known = ", ".join(_ADAPTERS)
        raise ValueError(f"unknown target type {type_name!r} (known types: {known})") from None
    module_name, class_name = dotted.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def settings_model(type_name: str) -> type[TargetSettings]:
    """The pydantic model that validates a [[targets]] entry of this type."""
    return adapter_class(type_name).settings_model


def build_target(settings: TargetSettings) -> Target:
    return adapter_class(settings.type)(settings)
