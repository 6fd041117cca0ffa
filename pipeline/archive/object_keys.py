"""Object keys: a template filled from the recording, with every value from the API sanitised
so that no name (absolute, `..`, NUL, control characters, over-long) can leave a target's
prefix or be refused by a backend."""

from __future__ import annotations

import posixpath
import re
import string
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

TEMPLATE_FIELDS = frozenset({"recording_id", "meeting_id", "session_id", "kind", "file_name", "yyyy", "mm", "dd"})
REQUIRED_FIELDS = ("recording_id", "kind")  # what keeps two files' keys apart
# Limits every backend accepts: a path component of 255 bytes (local, SFTP), a key of 1024 bytes
# (S3, GCS, Azure).
MAX_COMPONENT_BYTES = 255
MAX_KEY_BYTES = 1024
_TEMPLATE_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")


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


def check_template(template: str) -> str:
    """Refuse, when the configuration is loaded, a key template that could give an unsafe or
    non-unique key for some recording: unknown or decorated fields, escaped braces that only
    look like fields, literal `..`, control characters or backslashes, keys too long for a
    backend. The template is parsed the way `str.format` parses it, then rendered for sample
    recordings (hostile values included) and every key is checked. Returns the template."""
    fields = _template_fields(template)
    unknown = sorted(set(fields) - TEMPLATE_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in key template; use {sorted(TEMPLATE_FIELDS)}")
    if not set(REQUIRED_FIELDS) <= set(fields):
        raise ValueError("the key template must contain {recording_id} and {kind} so keys stay unique "
                         "(a literal {{recording_id}} is not a field)")
    if _TEMPLATE_UNSAFE.search(template):
        raise ValueError("the key template contains a control character or a backslash")
    rendered: set[str] = set()
    for label, sample in _SAMPLES.items():
        for kind in (VIDEO, AUDIO, MANIFEST):
            try:
                key = render_key(template, kind=kind, **sample)
            except ValueError:
                problem = "a '..' path component"
            else:
                problem = unsafe_key_reason(key)
            if problem:
                raise ValueError(f"the key template gives an unsafe key ({problem}) for {label}")
            rendered.add(key)
    if len(rendered) != len(_SAMPLES) * 3:
        raise ValueError("the key template gives the same key to different files")
    return template


def unsafe_key_reason(key: str | None) -> str | None:
    """Why `key` could leave a target's prefix or be refused by a backend; None when safe."""
    if not key:
        return "an empty key"
    if key.startswith("/") or "\\" in key or _TEMPLATE_UNSAFE.search(key):
        return "an absolute key, a backslash or a control character"
    for part in key.split("/"):
        if part in ("", ".") or set(part) == {"."}:
            return f"a path component {part!r}"
        if len(part.encode()) > MAX_COMPONENT_BYTES:
            return f"a path component longer than {MAX_COMPONENT_BYTES} bytes"
    if len(key.encode()) > MAX_KEY_BYTES:
        return f"a key longer than {MAX_KEY_BYTES} bytes"
    return None


def _template_fields(template: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"the key template is malformed ({exc}); write a literal brace as {{{{ or }}}}") from None
    fields = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"the key template field {{{name}}} takes no format spec or conversion "
                             "(they could cut or change values and make keys collide)")
        fields.append(name)
    return fields


# Recordings the template is tried on: ordinary, longest allowed names, and hostile values
# (the sanitiser must keep each one component; the template's own text must not undo that).
_SAMPLES = {
    "an ordinary recording": dict(recording_id="0f8e1c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b", file_name="Weekly sync.mp4",
         meeting_id="6a7b8c9d-0e1f-4a2b-9c3d-4e5f6a7b8c9d", session_id="1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
         when=datetime(2026, 11, 20, 8, 30)),
    "a recording with the longest allowed file name": dict(recording_id="9e8d7c6b-5a4f-4e3d-9c2b-1a0f9e8d7c6b", file_name="x" * (MAX_NAME_BYTES - 4) + ".mp4",
         meeting_id="2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e", session_id="3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f",
         when=datetime(1999, 12, 31, 23, 59)),
    "a recording with hostile names": dict(recording_id="..", file_name="../../etc/passwd", meeting_id="/",
                                           session_id="\x00", when=None),
}


def manifest_key(template: str, *, recording_id: str, meeting_id: str | None,
                 session_id: str | None, when: datetime | None) -> str:
    """The manifest sits where the template puts the recording's files, as its own kind."""
    safe_id = sanitise_component(recording_id, fallback="unknown-recording")
    return render_key(template, recording_id=recording_id, kind=MANIFEST, file_name=f"{safe_id}.json",
                      meeting_id=meeting_id, session_id=session_id, when=when)
