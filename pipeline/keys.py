"""Object keys: a template filled from the recording, with every value from the API sanitised
so that no name (absolute, `..`, NUL, control characters, over-long) can leave a target's
prefix or be refused by a backend."""

from __future__ import annotations

import posixpath
import re
import unicodedata
from datetime import datetime
from urllib.parse import urlsplit

# Windows/SMB-hostile characters (many NAS targets are SMB shares) and path separators.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_SPACES = re.compile(r"\s+")
# Path components are limited to 255 bytes on local and SFTP file systems; whole keys to
# 1024 bytes on S3, GCS and Azure. Leave room for the prefix, the date folders and the kind.
MAX_NAME_BYTES = 180
_EXTENSION = re.compile(r"^\.[A-Za-z0-9]{1,8}$")

VIDEO = "video"
AUDIO = "audio"
MANIFEST = "manifest"


def sanitise_component(value: str | None, *, fallback: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """One safe path component: no separators, control characters, leading dots (no hidden
    files, no `..`), bounded length; `fallback` when nothing usable is left."""
    text = unicodedata.normalize("NFC", value or "")
    text = _UNSAFE.sub("_", text)
    text = _SPACES.sub(" ", text).strip(" .")
    if not text or set(text) <= {"_", " ", "."}:
        return fallback
    return _truncate(text, max_bytes)


def _truncate(name: str, max_bytes: int) -> str:
    """Cut to `max_bytes` of UTF-8 without splitting a character, keeping the extension."""
    if len(name.encode()) <= max_bytes:
        return name
    stem, ext = posixpath.splitext(name)
    if not _EXTENSION.match(ext):
        stem, ext = name, ""
    budget = max_bytes - len(ext.encode())
    cut = stem.encode()[:budget].decode("utf-8", errors="ignore").rstrip(" .")
    return (cut or "recording") + ext


def video_file_name(output_file_name: str | None, recording_id: str) -> str:
    return sanitise_component(output_file_name, fallback=f"{sanitise_component(recording_id, fallback='recording')}.mp4")


def audio_file_name(video_name: str, audio_url: str | None) -> str:
    """The audio export has no name of its own in the API: the video's stem plus the audio
    URL's extension (mp3/aac/m4a...), so the pair sorts together."""
    ext = posixpath.splitext(urlsplit(audio_url or "").path)[1]
    if not _EXTENSION.match(ext) or ext.lower() == posixpath.splitext(video_name)[1].lower():
        ext = ".audio"
    stem = posixpath.splitext(video_name)[0]
    return _truncate(f"{stem}{ext}", MAX_NAME_BYTES)


def render_key(template: str, *, recording_id: str, kind: str, file_name: str,
               meeting_id: str | None, session_id: str | None, when: datetime | None) -> str:
    """Fill the key template. Every value is a sanitised single component, so the only
    slashes in a key are the template's own."""
    date = when.strftime("%Y/%m/%d").split("/") if when else ["unknown", "unknown", "unknown"]
    values = {
        "recording_id": sanitise_component(recording_id, fallback="unknown-recording"),
        "meeting_id": sanitise_component(meeting_id, fallback="no-meeting"),
        "session_id": sanitise_component(session_id, fallback="no-session"),
        "kind": kind,
        "file_name": sanitise_component(file_name, fallback=f"{kind}.bin"),
        "yyyy": date[0],
        "mm": date[1],
        "dd": date[2],
    }
    key = template.format(**values)
    parts = [part for part in key.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):  # only a hostile template could do this
        raise ValueError(f"key template produced an unsafe key: {key!r}")
    return "/".join(parts)


def manifest_key(template: str, *, recording_id: str, meeting_id: str | None,
                 session_id: str | None, when: datetime | None) -> str:
    """The manifest sits where the template puts the recording's files, as its own kind."""
    safe_id = sanitise_component(recording_id, fallback="unknown-recording")
    return render_key(template, recording_id=recording_id, kind=MANIFEST, file_name=f"{safe_id}.json",
                      meeting_id=meeting_id, session_id=session_id, when=when)
