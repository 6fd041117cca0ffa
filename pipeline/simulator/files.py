"""The presigned file server: URLs signed per answer that really expire (never past retention),
Range and If-Range as object stores honour them, ETag/Last-Modified, and the file faults."""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from .faults import Faults
from .records import Rec, iso
from .transport import Handler
from .world import FILE_BYTES_LIMIT, World


class FileServer:
    """Signs file URLs for the API's answers and serves GET/HEAD /files/{id}/{kind}."""

    def __init__(self, world: World, faults: Faults, url_lifetime: Callable[[], float]) -> None:
        self.world = world
        self.faults = faults
        self.url_lifetime = url_lifetime  # the simulator's lifetime for new URLs, in seconds
        self._key = secrets.token_bytes(32)

    # -- signing -------------------------------------------------------------------------------

    def _signature(self, recording_id: str, kind: str, expires: int) -> str:
        message = f"{recording_id}\n{kind}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, rec: Rec, kind: str, hostport: str, *, lifetime: float | None = None, expired: bool = False) -> tuple[str, int]:
        """(URL, expiry as unix seconds): `lifetime` from now, never past the retention end."""
        now = self.world.now_ts()
        if lifetime is None:
            override = self.faults.url_lifetime
            lifetime = override if override is not None else self.url_lifetime()
        expires = math.ceil(now + lifetime)
        if expired:
            expires = math.floor(now) - 60
        retention_end = rec.retention_end
        if retention_end is not None:
            expires = min(expires, math.floor(retention_end.timestamp()))
        signature = self._signature(rec.id, kind, expires)
        url = f"http://{hostport}/files/{quote(rec.id, safe='')}/{kind}?X-Expires={expires}&X-Signature={signature}"
        return url, expires

    def urls(self, rec: Rec, hostport: str, expired: bool) -> dict[str, Any]:
        """The URL fields of an answer about `rec` (all null without a file on the bucket)."""
        if not rec.has_file("video"):
            return {"download_url": None, "audio_download_url": None, "download_url_expiry": None}
        video, expires = self.sign(rec, "video", hostport, expired=expired)
        audio = self.sign(rec, "audio", hostport, expired=expired)[0] if rec.has_file("audio") else None
        expiry = iso(datetime.fromtimestamp(expires, tz=timezone.utc))
        return {"download_url": video, "audio_download_url": audio, "download_url_expiry": expiry}

    # -- serving -------------------------------------------------------------------------------

    def serve(self, h: Handler, method: str, path: str, query: dict[str, list[str]]) -> None:
        match = re.fullmatch(r"/files/([^/]+)/(video|audio)", path)
        if method not in ("GET", "HEAD") or match is None:
            h.send_xml(404 if match is None else 405, "NoSuchKey" if match is None else "MethodNotAllowed", "Not found", head=method == "HEAD")
            return
        head = method == "HEAD"
        recording_id, kind = match.group(1), match.group(2)
        expires_text, signature = query.get("X-Expires", [""])[-1], query.get("X-Signature", [""])[-1]
        if not expires_text.isdigit() or not signature:
            h.send_xml(403, "AccessDenied", "Query-string authentication requires the Signature and Expires parameters", head=head)
            return
        expires = int(expires_text)
        if not hmac.compare_digest(signature, self._signature(recording_id, kind, expires)):
            h.send_xml(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.", head=head)
            return
        if self.world.now_ts() > expires:
            h.send_xml(403, "AccessDenied", "Request has expired", head=head)
            return
        with self.world.lock:
            rec = self.world.recs.get(recording_id)
            available = rec is not None and rec.has_file(kind)
            mismatch = self.faults.size_mismatch.get(recording_id, 0) if rec and available else 0
            length = max(0, rec.file_length(kind) + mismatch) if rec and available else 0
            created = (rec.stopped or rec.invoked) if rec and available else None
        if not available or created is None:
            h.send_xml(404, "NoSuchKey", "The specified key does not exist.", head=head)
            return
        if mismatch:
            self.faults.note("size_mismatch")
        if not head and self.faults.consume("file_server_errors"):
            h.send_xml(503, "SlowDown", "Please reduce your request rate.", head=head)
            return
        if not head and self.faults.consume("slow_first_byte"):
            time.sleep(self.faults.first_byte_seconds)  # nothing at all is sent meanwhile
        self._send_file(h, recording_id, kind, length, created, head)

    def _validators(self, recording_id: str, kind: str, length: int, created: datetime, version: int) -> dict[str, str]:
        """ETag and Last-Modified as an object store gives them: both change when the file does."""
        faults = self.faults
        if faults.stale_validators:
            version = 0
        tag = hashlib.md5(f"{recording_id}/{kind}/{length}/{version}".encode(), usedforsecurity=False).hexdigest()
        modified = created + timedelta(minutes=version)
        headers = {"ETag": f'"{tag}"', "Last-Modified": email.utils.format_datetime(modified.astimezone(timezone.utc), usegmt=True)}
        wanted = {"both": ("ETag", "Last-Modified"), "etag": ("ETag",), "last-modified": ("Last-Modified",), "none": ()}
        return {name: headers[name] for name in wanted[faults.validators]}

    def _send_file(self, h: Handler, recording_id: str, kind: str, length: int, created: datetime, head: bool) -> None:
        faults = self.faults
        version = self.world.file_version(recording_id, kind)
        variant = self.world.variant(recording_id, kind, version)
        validators = self._validators(recording_id, kind, length, created, version)
        content_type = "video/mp4" if kind == "video" else "audio/mpeg"
        if version and faults.stale_validators:
            faults.note("stale_validators")
        if faults.gzip_bodies and not head:
            faults.note("gzip_bodies")
            self._send_gzip(h, recording_id, variant, length, content_type, validators)
            return
        status, start, end = 200, 0, length
        range_header = h.headers.get("Range")
        if range_header and faults.ignore_range:
            faults.note("ignore_range")
            range_header = None
        if range_header and faults.ignore_later_ranges and not range_header.strip().startswith("bytes=0-"):
            faults.note("ignore_later_ranges")
            range_header = None
        # If-Range: the Range holds only while the file is the one the client began (RFC 9110 13.1.5).
        if_range_holds = _if_range_holds(h.headers.get("If-Range"), validators)
        if range_header and not if_range_holds and faults.ignore_if_range:
            faults.note("ignore_if_range")
        if range_header and (faults.ignore_if_range or if_range_holds):
            parsed = _parse_range(range_header, length)
            if parsed == "unsatisfiable":
                h.send_xml(416, "InvalidRange", "The requested range is not satisfiable", head=head, headers={"Content-Range": f"bytes */{length}"})
                return
            if isinstance(parsed, tuple):
                status, (start, end) = 206, parsed
        headers = {"Accept-Ranges": "bytes", **validators}
        if status == 206:
            if start > 0 and faults.consume("shift_ranges"):  # the same length, from elsewhere
                span = end - start
                start = min(max(0, start + faults.range_shift), max(0, length - 1))
                end = min(length, start + span)
            total = "*" if faults.total_unknown else str(length)
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
        size = end - start
        # One fault per answer: a drop, or else a clean early end.
        drop_at = None
        if not head and size > faults.drop_after_bytes and faults.consume("drop_downloads"):
            drop_at = faults.drop_after_bytes
        early = not head and drop_at is None and size > faults.end_early_after and faults.consume("end_early")
        declared = None if faults.chunked or early else max(0, size + faults.wrong_content_length)
        extra = faults.extra_bytes if declared is None and drop_at is None and not early else 0
        for name in ("total_unknown", "chunked", "wrong_content_length", "throttle_bps", "extra_bytes"):
            if getattr(faults, name) and (name != "total_unknown" or status == 206) and (name != "extra_bytes" or extra):
                faults.note(name)
        h.start_body(status, declared, content_type, headers, chunked=faults.chunked)
        if head:
            return
        if faults.wrong_content_length:
            h.close_connection = True  # the client cannot know where this body ends
        stop = min(x for x in (size, drop_at, faults.end_early_after if early else None) if x is not None)
        if drop_at is not None and faults.change_on_drop:
            # Changed before the cut (this answer keeps the old bytes): a retry always sees it.
            faults.note("change_on_drop")
            self.world.change_file(recording_id, kind)
        h.stream(self.world.file_windows(recording_id, variant, start, start + stop + extra, self._chunk()),
                 throttle_bps=faults.throttle_bps, chunked=faults.chunked, cut=drop_at is not None)

    def _send_gzip(self, h: Handler, recording_id: str, variant: str, length: int, content_type: str,
                   validators: dict[str, str]) -> None:
        """The whole file gzip-encoded (200, Range ignored), as a misconfigured CDN sends it."""
        if length > FILE_BYTES_LIMIT:
            raise ValueError("gzip_bodies is for small files")
        raw = b"".join(bytes(w) for w in self.world.file_windows(recording_id, variant, 0, length, 1 << 20))
        body = gzip.compress(raw, compresslevel=1, mtime=0)
        headers = {"Accept-Ranges": "bytes", "Content-Encoding": "gzip", "Vary": "Accept-Encoding", **validators}
        h.start_body(200, None if self.faults.chunked else len(body), content_type, headers, chunked=self.faults.chunked)
        chunk = self._chunk()
        view = memoryview(body)
        h.stream((view[i : i + chunk] for i in range(0, len(body), chunk)), throttle_bps=self.faults.throttle_bps,
                 chunked=self.faults.chunked, cut=False)

    def _chunk(self) -> int:
        """Write size: small when throttled (a steady trickle), 1 MiB otherwise."""
        return max(1024, self.faults.throttle_bps // 20) if self.faults.throttle_bps > 0 else 1 << 20


def _parse_range(header: str, length: int) -> tuple[int, int] | str | None:
    """(start, end-exclusive), "unsatisfiable", or None to ignore the header (as RFC 9110 allows)."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if match is None or match.group(1) == match.group(2) == "":
        return None  # multi-range or garbage: serve the whole body
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix range: the last N bytes
        suffix = int(last)
        if suffix == 0 or length == 0:
            return "unsatisfiable"
        return max(0, length - suffix), length
    start = int(first)
    end = length if last == "" else min(int(last) + 1, length)
    if start >= length or (last != "" and int(last) < start):
        return "unsatisfiable"
    return start, end


def _if_range_holds(value: str | None, validators: dict[str, str]) -> bool:
    """True when there is no If-Range, or it names the file as it is now (a strong ETag, or the
    exact Last-Modified date); a weak ETag never matches."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith(("W/", '"')):
        return not value.startswith("W/") and value == validators.get("ETag")
    return value == validators.get("Last-Modified")
