"""Keys from hostile API values stay one safe component each, inside the prefix."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone

import pytest

from pipeline import keys
from pipeline.hashing import BackgroundHasher, Hasher, hash_file
from pipeline.redact import Redactor

WHEN = datetime(2026, 11, 20, 8, 30, tzinfo=timezone.utc)


def key(file_name: str, recording_id: str = "rec-1", template: str = "{yyyy}/{mm}/{dd}/{recording_id}/{kind}-{file_name}"):
    return keys.render_key(template, recording_id=recording_id, kind="video", file_name=file_name,
                           meeting_id=None, session_id=None, when=WHEN)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/shadow", "a/../../b", "..", ".", "...", "\x00",
                                  "x\x00y.mp4", "tab\there\nnewline.mp4", "\x1b[31mred.mp4", "back\\slash.mp4",
                                  "C:\\Windows\\evil.mp4", " ", "", "con:*?\"<>|.mp4"])
def test_hostile_names_become_one_safe_component(name):
    result = key(keys.video_file_name(name, "rec-1"))
    parts = result.split("/")
    assert parts[:4] == ["2026", "11", "20", "rec-1"] and len(parts) == 5
    leaf = parts[-1]
    assert leaf.startswith("video-") and ".." not in leaf.replace("...", "")[:0] + leaf.split("video-", 1)[1][:2]
    assert not any(ord(c) < 32 or c in '\\/:*?"<>|' for c in leaf)


def test_dot_names_never_hide_or_climb():
    assert keys.sanitise_component("..", fallback="f") == "f"
    assert keys.sanitise_component(".hidden", fallback="f") == "hidden"
    assert keys.sanitise_component("../x", fallback="f") == "_x"


def test_long_unicode_names_are_cut_on_a_character_boundary_keeping_the_extension():
    """Rule: "Hostile input is contained ... at most 180 bytes": a long name is cut to the
    longest whole-character prefix that fits with its extension, never mid-character."""
    stem = "ré" * 100  # 3 bytes a pair: the 176-byte budget ends inside an "é"
    name = keys.video_file_name(stem + ".mp4", "r")
    assert name.endswith(".mp4")
    kept = name[: -len(".mp4")]
    assert stem.startswith(kept)  # a prefix of the original: nothing replaced, nothing re-ordered
    assert len(name.encode()) <= keys.MAX_NAME_BYTES
    # The longest such prefix: one more character would not fit. The budget ends inside a
    # two-byte "é", so a byte cut would leave half a character; a character cut drops it whole.
    assert len((stem[: len(kept) + 1] + ".mp4").encode()) > keys.MAX_NAME_BYTES
    assert stem.encode()[: keys.MAX_NAME_BYTES - 4] != kept.encode()


def test_hostile_recording_ids_stay_in_one_component():
    result = key("a.mp4", recording_id="../../root")
    assert result.split("/")[3] == "_.._root" and len(result.split("/")) == 5


def test_missing_values_get_fallbacks():
    assert keys.video_file_name(None, "abc") == "abc.mp4"
    result = keys.render_key("{meeting_id}/{session_id}/{recording_id}/{kind}", recording_id="r", kind="audio",
                             file_name="x", meeting_id=None, session_id=None, when=None)
    assert result == "no-meeting/no-session/r/audio"


def test_audio_name_takes_the_urls_extension():
    assert keys.audio_file_name("talk.mp4", "https://x/y/audio.mp3?sig=1") == "talk.mp3"
    assert keys.audio_file_name("talk.mp4", "https://x/y/noext?sig=1") == "talk.audio"


def test_manifest_key_sits_with_the_recording():
    assert keys.manifest_key("{yyyy}/{mm}/{dd}/{recording_id}/{kind}-{file_name}", recording_id="r1",
                             meeting_id=None, session_id=None, when=WHEN) == "2026/11/20/r1/manifest-r1.json"


def test_background_hasher_matches_plain_hashing(tmp_path):
    data = os.urandom(3_000_000)
    background = BackgroundHasher()
    for i in range(0, len(data), 65536):
        background.update(data[i:i + 65536])
    sums = background.finish().checksums()
    plain = Hasher()
    plain.update(data)
    assert sums == plain.checksums()
    assert sums.sha256 == hashlib.sha256(data).hexdigest() and sums.md5 == hashlib.md5(data).hexdigest()
    path = tmp_path / "f"
    path.write_bytes(data)
    assert hash_file(path).checksums() == sums and hash_file(path, limit=10).size == 10


def test_redactor_masks_secrets_their_lines_and_url_queries():
    pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----"
    redact = Redactor(["tok-123456", pem, "ab"])
    text = redact("token tok-123456 line MIIEvQIBADANBgkqhkiG9w0BAQEFAASC url https://h/p?X-Signature=s&X=1 ab")
    assert "tok-123456" not in text and "MIIEvQ" not in text and "X-Signature" not in text
    assert text.endswith(" ab")  # values shorter than 4 characters are not treated as secrets


@pytest.mark.parametrize("key, reason", [
    ("a/../b", "a path component '..'"), ("../a", "a path component '..'"), ("a/.../b", "a path component '...'"),
    ("/a/b", "an absolute key"), ("a\\b", "a backslash"), ("a/\x00/b", "a control character"),
    ("a//b", "a path component ''"), ("", "an empty key"), ("x" * 256, "longer than 255 bytes"),
    ("/".join(["x" * 200] * 6), "a key longer than 1024 bytes"),
])
def test_unsafe_key_reasons(key, reason):
    """README "What rtk-archive guarantees" (a key never leaves the target's prefix): each way a
    key could escape, or be refused by a backend, is named."""
    assert reason in keys.unsafe_key_reason(key)


def test_safe_keys_have_no_reason():
    assert keys.unsafe_key_reason("2026/11/20/rec-1/video-a.mp4") is None
    assert keys.unsafe_key_reason("..hidden/x") is None  # starts with dots, is not dots only
