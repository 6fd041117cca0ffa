"""The simulator's presigned files over real HTTP: Range, HEAD, expiry, signatures, and every file
fault switch (drops, lying sizes, framing, changed files, validators and If-Range, gzip)."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import datetime, timedelta, timezone
from http.client import HTTPConnection
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.simulator.helpers import fresh_items, list_all, rec_url, sim_detail, uploaded, web


# ---------------------------------------------------------------------------------------------
# Presigned files
# ---------------------------------------------------------------------------------------------


def test_file_download_head_and_ranges(sim):
    item = uploaded(sim)
    rid, size, url = item["id"], item["file_size"], item["download_url"]
    full = web.get(url)
    assert full.status_code == 200 and int(full.headers["content-length"]) == size == len(full.content)
    assert hashlib.sha256(full.content).hexdigest() == sim.expected_sha256(rid)
    assert full.content == sim.file_bytes(rid)

    head = web.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(size) and head.content == b""
    assert head.headers["accept-ranges"] == "bytes"

    part = web.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.headers["content-range"] == f"bytes 100-199/{size}"
    assert part.content == full.content[100:200] and part.headers["content-length"] == "100"
    rest = web.get(url, headers={"Range": f"bytes={size - 10}-"})
    assert rest.status_code == 206 and rest.content == full.content[-10:]
    clipped = web.get(url, headers={"Range": f"bytes={size - 5}-{size + 100}"})
    assert clipped.status_code == 206 and clipped.content == full.content[-5:]

    beyond = web.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"


def test_keep_alive_serves_several_requests_on_one_connection(sim):
    item = uploaded(sim)
    parts = urlsplit(item["download_url"])
    conn = HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", f"{parts.path}?{parts.query}", headers={"Range": "bytes=0-9"})
            answer = conn.getresponse()
            assert answer.version == 11 and answer.status == 206 and len(answer.read()) == 10
    finally:
        conn.close()
    # The same socket served all three: one connection seen by the server's log is not
    # observable directly, but a closed connection would have raised on the 2nd request.


def test_bad_signature_missing_params_and_unknown_file(sim):
    url = uploaded(sim)["download_url"]
    tampered = re.sub(r"X-Signature=[0-9a-f]{4}", "X-Signature=0000", url)
    answer = web.get(tampered)
    assert answer.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in answer.text
    assert web.get(url.split("?")[0]).status_code == 403
    other_kind = url.replace("/video?", "/audio?")
    assert web.get(other_kind).status_code == 403  # a signature is for one file only
    assert sim.has_file(item_id := urlsplit(url).path.split("/")[2]) and sim.retention_end(item_id) > sim.now()
    gone = sim.add_recording(size=100)
    gone_url = sim.download_url(gone["id"])
    sim.remove_recording(gone["id"])
    assert web.get(gone_url).status_code == 404 and "<Code>NoSuchKey</Code>" in web.get(gone_url).text


def test_urls_really_expire_and_never_outlive_retention(sim):
    item = uploaded(sim)
    expires = int(parse_qs(urlsplit(item["download_url"]).query)["X-Expires"][0])
    assert item["download_url_expiry"] == datetime.fromtimestamp(expires, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert abs(expires - (time.time() + 3600)) < 5

    sim.advance(3601)
    answer = web.get(item["download_url"])
    assert answer.status_code == 403
    assert "<Code>AccessDenied</Code>" in answer.text and "<Message>Request has expired</Message>" in answer.text
    assert answer.headers["content-type"] == "application/xml"

    # Stopped 7 days minus 10 minutes ago: the URL lives 10 minutes, not an hour.
    stopped = datetime.now(timezone.utc) - timedelta(days=7) + timedelta(minutes=10) + timedelta(seconds=3601)
    near = sim.add_recording(stopped_time=stopped)
    detail = sim_detail(sim, near["id"])
    deadline = datetime.fromisoformat(near["stopped_time"]) + timedelta(days=7)
    assert datetime.fromisoformat(detail["download_url_expiry"]) == deadline.replace(microsecond=0)


def test_expired_recordings_have_dead_urls(sim, http):
    expired = list_all(http, sim, expired="true", status="UPLOADED")["data"]
    with_url = [i for i in expired if i["download_url"]]
    assert with_url
    for item in with_url:
        assert datetime.fromisoformat(item["download_url_expiry"]) < datetime.now(timezone.utc)
        assert web.get(item["download_url"]).status_code == 403


# ---------------------------------------------------------------------------------------------
# Fault switches
# ---------------------------------------------------------------------------------------------


def test_expired_list_urls_fault_but_get_one_re_signs(sim, http):
    sim.faults.expired_list_urls = 1
    item = next(i for i in list_all(http, sim, status="UPLOADED", expired="false")["data"] if i["download_url"])
    assert web.get(item["download_url"]).status_code == 403
    fresh = http.get(rec_url(sim, f"/{item['id']}")).json()["data"]
    assert web.get(fresh["download_url"]).status_code == 200
    again = next(i for i in list_all(http, sim, status="UPLOADED", expired="false")["data"] if i["id"] == item["id"])
    assert web.get(again["download_url"]).status_code == 200  # the count was 1


def test_short_url_lifetime_fault(sim):
    sim.faults.url_lifetime = 30
    item = uploaded(sim)
    expiry = datetime.fromisoformat(item["download_url_expiry"])
    assert expiry - datetime.now(timezone.utc) < timedelta(seconds=32)
    assert web.get(item["download_url"], headers={"Range": "bytes=0-0"}).status_code == 206
    sim.advance(31)  # e.g. while a download was paused half-way
    assert web.get(item["download_url"], headers={"Range": "bytes=1-"}).status_code == 403


def test_drop_download_after_k_bytes(sim):
    item = uploaded(sim)
    sim.faults.set(drop_downloads=1, drop_after_bytes=10_000)
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError):
        with web.stream("GET", item["download_url"]) as answer:
            assert answer.headers["content-length"] == str(item["file_size"])
            for chunk in answer.iter_raw():
                received += chunk
    assert len(received) == 10_000 and bytes(received) == sim.file_bytes(item["id"], "video", 0, 10_000)
    resumed = web.get(item["download_url"], headers={"Range": f"bytes={len(received)}-"})
    assert resumed.status_code == 206 and bytes(received) + resumed.content == sim.file_bytes(item["id"])
    log = [r for r in sim.requests if r.kind == "file"]
    assert log[-1].range == f"bytes={len(received)}-" and log[-2].range is None


def test_size_mismatch_fault(sim):
    longer, shorter = fresh_items(sim, 2)
    sim.faults.size_mismatch = {longer["id"]: 17, shorter["id"]: -100}
    body = web.get(longer["download_url"]).content
    assert len(body) == longer["file_size"] + 17
    assert len(web.get(shorter["download_url"]).content) == shorter["file_size"] - 100
    assert sim.expected_sha256(longer["id"]) == hashlib.sha256(body[: longer["file_size"]]).hexdigest()


def test_ignore_range_fault(sim):
    item = uploaded(sim)
    sim.faults.ignore_range = True
    answer = web.get(item["download_url"], headers={"Range": "bytes=10-19"})
    assert answer.status_code == 200 and len(answer.content) == item["file_size"]


def test_throttled_download_is_still_correct(sim):
    raw = sim.add_recording(size=50_000)
    sim.faults.throttle_bps = 2_000_000
    url = sim_detail(sim, raw["id"])["download_url"]
    assert web.get(url).content == sim.file_bytes(raw["id"])


def test_file_server_errors_fault(sim):
    item = uploaded(sim)
    sim.faults.file_server_errors = 1
    assert web.get(item["download_url"]).status_code == 503
    assert web.get(item["download_url"]).status_code == 200


def test_files_carry_validators_and_honour_if_range(sim):
    """ETag and Last-Modified as S3/R2 send them; If-Range keeps a Range only while the file is
    the one it names (a strong ETag or the exact date), else the whole file comes back (200)."""
    item = uploaded(sim)
    rid, url, size = item["id"], item["download_url"], item["file_size"]
    first = web.get(url, headers={"Range": "bytes=0-9"})
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert etag.startswith('"') and modified.endswith("GMT")
    for validator in (etag, modified):
        kept = web.get(url, headers={"Range": "bytes=10-19", "If-Range": validator})
        assert kept.status_code == 206 and kept.content == sim.file_bytes(rid, start=10, end=20)
    for stale in ('"not-it"', "W/" + etag, "Mon, 01 Jan 2001 00:00:00 GMT"):
        whole = web.get(url, headers={"Range": "bytes=10-19", "If-Range": stale})
        assert whole.status_code == 200 and len(whole.content) == size
    log = [r for r in sim.requests if r.kind == "file"]
    assert log[-1].if_range == "Mon, 01 Jan 2001 00:00:00 GMT" and log[-1].headers_sent["ETag"] == etag


def test_change_file_serves_other_bytes_under_the_same_url(sim):
    """change_file: same URL, same size, other bytes, new validators (unless stale_validators)."""
    item = uploaded(sim)
    rid, url = item["id"], item["download_url"]
    before = web.get(url)
    assert sim.change_file(rid) == 1 and sim.file_version(rid) == 1
    after = web.get(url)
    assert len(after.content) == len(before.content) and after.content != before.content
    assert after.content == sim.file_bytes(rid) == sim.file_bytes(rid, version=1)
    assert before.content == sim.file_bytes(rid, version=0)
    assert hashlib.sha256(after.content).hexdigest() == sim.expected_sha256(rid) != sim.expected_sha256(rid, version=0)
    assert after.headers["etag"] != before.headers["etag"]
    assert after.headers["last-modified"] != before.headers["last-modified"]
    sim.faults.set(stale_validators=True)
    lying = web.get(url)
    assert lying.content == after.content and lying.headers["etag"] == before.headers["etag"]
    sim.faults.set(validators="none")
    assert not {"etag", "last-modified"} & set(web.get(url).headers)


def test_change_on_drop_changes_the_file_after_the_cut(sim):
    item = uploaded(sim)
    sim.faults.set(drop_downloads=1, drop_after_bytes=1000, change_on_drop=True)
    with pytest.raises(httpx.RemoteProtocolError):
        web.get(item["download_url"])
    assert sim.file_version(item["id"]) == 1
    assert [r.faults for r in sim.requests if r.kind == "file"] == [["drop_downloads", "change_on_drop"]]


def test_framing_faults_seen_raw(sim):
    """chunked, end_early (a clean early end), wrong_content_length, extra_bytes, total_unknown."""
    item = uploaded(sim)
    rid, url, size = item["id"], item["download_url"], item["file_size"]
    sim.faults.set(chunked=True)
    chunked = web.get(url)
    assert chunked.headers["transfer-encoding"] == "chunked" and "content-length" not in chunked.headers
    assert chunked.content == sim.file_bytes(rid)

    sim.faults.set(chunked=False, end_early=1, end_early_after=1000)
    early = web.get(url)  # no error: the connection closes where a normal body would end
    assert early.content == sim.file_bytes(rid, end=1000) and "content-length" not in early.headers
    assert early.headers["connection"] == "close"

    sim.faults.set(wrong_content_length=-10)
    with httpx.Client(timeout=10) as fresh:  # the lying answer closes its connection
        short = fresh.get(url)
    assert short.headers["content-length"] == str(size - 10) and short.content == sim.file_bytes(rid, end=size - 10)

    sim.faults.set(wrong_content_length=0, chunked=True, extra_bytes=7, total_unknown=True)
    longer = web.get(url, headers={"Range": "bytes=0-"})
    assert longer.headers["content-range"] == f"bytes 0-{size - 1}/*" and len(longer.content) == size + 7
    assert [r.faults for r in sim.requests if r.kind == "file"][-1] == ["total_unknown", "chunked", "extra_bytes"]


def test_shift_ranges_answers_a_resume_from_elsewhere(sim):
    item = uploaded(sim)
    rid, url, size = item["id"], item["download_url"], item["file_size"]
    sim.faults.set(shift_ranges=1, range_shift=-100)
    assert web.get(url, headers={"Range": "bytes=0-9"}).headers["content-range"] == f"bytes 0-9/{size}"  # not a resume
    shifted = web.get(url, headers={"Range": "bytes=1000-1009"})
    assert shifted.headers["content-range"] == f"bytes 900-909/{size}"
    assert shifted.content == sim.file_bytes(rid, start=900, end=910)
    assert web.get(url, headers={"Range": "bytes=1000-1009"}).headers["content-range"] == f"bytes 1000-1009/{size}"


def test_gzip_bodies_and_a_slow_first_byte(sim):
    item = uploaded(sim)
    rid, url = item["id"], item["download_url"]
    sim.faults.set(gzip_bodies=True)
    with httpx.Client(timeout=10) as client:
        answer = client.get(url, headers={"Accept-Encoding": "identity", "Range": "bytes=5-"})
    assert answer.status_code == 200 and answer.headers["content-encoding"] == "gzip"
    assert answer.content == sim.file_bytes(rid)  # httpx decodes it: the whole file
    sim.faults.set(gzip_bodies=False, slow_first_byte=1, first_byte_seconds=1.0)
    with httpx.Client(timeout=0.2) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.get(url)
        assert impatient.get(url).status_code == 200


def test_streams_fast_enough(sim):
    """A coarse guard against per-byte Python in the file path (it streams at >1 GB/s locally)."""
    raw = sim.add_recording(size=256 * 1024 * 1024)
    parts = urlsplit(sim.download_url(raw["id"]))
    conn = HTTPConnection(parts.hostname, parts.port, timeout=30)
    buffer = memoryview(bytearray(1 << 20))
    started = time.perf_counter()
    conn.request("GET", f"{parts.path}?{parts.query}")
    answer = conn.getresponse()
    total = 0
    while chunk := answer.readinto(buffer):
        total += chunk
    conn.close()
    assert total == 256 * 1024 * 1024
    assert time.perf_counter() - started < 10
