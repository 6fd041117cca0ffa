"""What both demos (`demo`, `demo --serve`) start from: the embedded configuration and the
demo's folder, checked before anything starts."""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

from pipeline import errors


def demo_config() -> str:
    """The demo's configuration, with ${...} placeholders the demo fills in."""
    return resources.files("pipeline.cli").joinpath("demo.toml").read_text(encoding="utf-8")


def demo_folder(path: str) -> Path:
    """The demo's folder, created if needed and checked writable, or one clear line."""
    folder = Path(path).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise errors.ConfigError(f"--dir {folder}: cannot create it: {exc.strerror or exc}") from None
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise errors.ConfigError(f"--dir {folder}: cannot write there: {exc.strerror or exc}") from None
    return folder
