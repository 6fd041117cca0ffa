"""The adversarial file server: switches that make the simulator's file server behave as real
object stores and CDNs sometimes do (no Content-Length, bodies that stop short without an
error, lying lengths, ranges from the wrong place, a file that changes between a break and the
resume, compression nobody asked for, a slow first byte). Each goes through a real `run` (or
the Download class over real sockets) and must end with the right file, or a clear refusal:
never other bytes under the recording's name. Each test checks in the simulator's request log
that the misbehaviour really happened, then checks the archived bytes' SHA-256 against the
simulator's file and the ledger's state."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.archive.bytepath import FileConnections
from pipeline.archive.download import RESUME_OVERLAP, Download, SignedUrl
from pipeline.errors import DownloadError
from pipeline.session import run_archive
from tests.helpers import file_requests, ledger_rows, make_config, stored_digest


def archive(tmp_path: Path, sim, **kwargs):
    return run_archive(make_config(tmp_path, sim, **kwargs), command="test")


def file_row(tmp_path: Path, rid: str, kind: str = "video") -> dict:
    return ledger_rows(tmp_path / "ledger.db", "SELECT state, sha256, last_error FROM files "
                                               "WHERE recording_id=? AND kind=?", (rid, kind))[0]


def assert_archived_exactly(tmp_path: Path, sim, rid: str, result) -> None:
    """The run archived the file the server holds now, whole, and the ledger says so."""
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    assert stored_digest(tmp_path / "nas", rid) == sim.expected_sha256(rid)
    row = file_row(tmp_path, rid)
    assert row["state"] == "archived" and row["sha256"] == sim.expected_sha256(rid)


def assert_refused(tmp_path: Path, rid: str, result, *reason: str) -> None:
    """A clear refusal: the file failed with its reason, nothing stored, the ledger says failed."""
    assert result.exit_code == 1 and result.summary.archived == 0 and result.summary.failed == 1
    assert stored_digest(tmp_path / "nas", rid) is None
    row = file_row(tmp_path, rid)
    assert row["state"] == "failed" and row["sha256"] is None
    for words in reason:
        assert words in row["last_error"], row["last_error"]


def fired(sim, fault: str) -> list:
    return [r for r in file_requests(sim) if fault in r.faults]


# --------------------------------------------------------------------------- framing


def test_chunked_body_without_content_length_is_archived_whole(sim, tmp_path):
    """Chunked transfer coding, no Content-Length: the length comes from Content-Range and
    file_size, and a break in the middle resumes correctly."""
    rec = sim.add_recording(size=700_000)
    sim.faults.set(chunked=True, drop_downloads=1, drop_after_bytes=300_000)
    result = archive(tmp_path, sim)
    answers = file_requests(sim)
    assert all(r.headers_sent.get("Transfer-Encoding") == "chunked" and "Content-Length" not in r.headers_sent
               for r in answers)
    assert answers[0].cut and answers[1].range == f"bytes={300_000 - RESUME_OVERLAP}-"
    assert_archived_exactly(tmp_path, sim, rec["id"], result)


def test_a_truncated_body_without_content_length_is_refused(sim, tmp_path):
    """Rule: "A download is complete and unaltered: a body shorter than file_size is never
    archived." The store holds a truncated object and sends it chunked: no Content-Length, a
    proper end, nothing in the answers says it is short. Only the final check against the
    API's file_size (`_check_complete`) can see it: removing that check archives the stub."""
    rec = sim.add_recording(size=300_000)
    sim.faults.set(chunked=True, total_unknown=True, size_mismatch={rec["id"]: -50_000})
    result = archive(tmp_path, sim)
    assert fired(sim, "size_mismatch") and fired(sim, "chunked")
    assert all(not r.cut for r in file_requests(sim))  # every answer ended properly
    assert_refused(tmp_path, rec["id"], result, "received 250000 bytes", "file_size is 300000")


def test_bodies_ending_early_without_an_error_are_continued_to_the_announced_end(sim, tmp_path):
    """Rule: "Broken transfers resume": every answer has no Content-Length and closes the
    connection after 150 000 bytes, as a normal end looks; each 206 said where it ends
    (Content-Range), so each short one is continued until the file is whole."""
    rec = sim.add_recording(size=400_000)
    sim.faults.set(end_early=-1, end_early_after=150_000)
    result = archive(tmp_path, sim)
    early = fired(sim, "end_early")
    assert len(early) >= 3 and all(r.bytes_sent == 150_000 and not r.cut for r in early)
    assert "Content-Length" not in early[0].headers_sent
    assert_archived_exactly(tmp_path, sim, rec["id"], result)


def test_a_body_ending_early_without_an_error_is_refused_when_nothing_announced_its_end(sim, tmp_path):
    """Rule: "a body shorter than file_size is never archived." A server that ignores Range
    answers 200 without Content-Length and closes the connection after part of the file, as a
    normal end looks: nothing but file_size says it is short."""
    rec = sim.add_recording(size=400_000)
    sim.faults.set(end_early=-1, end_early_after=150_000, ignore_range=True)
    result = archive(tmp_path, sim)
    early = fired(sim, "end_early")
    assert early and all(r.status == 200 and r.bytes_sent == 150_000 and not r.cut for r in early)
    assert "Content-Length" not in early[0].headers_sent
    assert_refused(tmp_path, rec["id"], result, "received 150000 bytes", "file_size is 400000")


def test_a_resumed_answer_ending_early_is_resumed_again(sim, tmp_path):
    """Rule: "Broken transfers resume": a 206 that stops short of the end its Content-Range
    announced, without any error, is continued from where it stopped, not taken as complete."""
    rec = sim.add_recording(size=600_000)
    sim.faults.set(drop_downloads=1, drop_after_bytes=200_000, end_early=1, end_early_after=100_000)
    result = archive(tmp_path, sim)
    answers = file_requests(sim)
    assert answers[0].cut and "end_early" in answers[1].faults and not answers[1].cut
    resumed_at = 200_000 + 100_000 - RESUME_OVERLAP  # the second answer re-sent the overlap first
    assert answers[2].range == f"bytes={resumed_at - RESUME_OVERLAP}-"
    assert_archived_exactly(tmp_path, sim, rec["id"], result)


def test_a_short_answer_is_the_only_sign_when_no_length_is_known(sim, tmp_path):
    """Rule: "a body shorter than file_size (or than announced) is never archived", where the
    check of each answer against its own Content-Range (`_receive_into`) is the only guard: a
    file with no file_size, served chunked (no Content-Length), whose resumed answer says
    `bytes a-b/*` (length unknown) and stops short of b without an error. Without that check
    the stub would be archived as the recording."""
    rec = sim.add_recording(size=600_000, file_size=None)
    sim.faults.set(chunked=True, total_unknown=True, drop_downloads=1, drop_after_bytes=200_000,
                   end_early=1, end_early_after=100_000)
    result = archive(tmp_path, sim)
    answers = file_requests(sim)
    assert answers[0].cut and "end_early" in answers[1].faults
    assert answers[1].headers_sent["Content-Range"].endswith("/*")
    assert len(answers) == 3  # the short answer was continued, not taken as the end
    assert_archived_exactly(tmp_path, sim, rec["id"], result)


@pytest.mark.parametrize("wrong_by", [+5000, -5000])
@pytest.mark.parametrize("file_size", ["known", "unknown"])
def test_a_wrong_content_length_is_refused(sim, tmp_path, wrong_by, file_size):
    """Rule: "A download is complete and unaltered." A Content-Length that does not match the
    body: caught against file_size, or (for a file without one, like every audio file) against
    the answer's own Content-Range, which the first request asks for with `Range: bytes=0-`."""
    rec = sim.add_recording(size=200_000, **({} if file_size == "known" else {"file_size": None}))
    sim.faults.set(wrong_content_length=wrong_by)
    result = archive(tmp_path, sim, archive={"download_attempts": 2})
    served = fired(sim, "wrong_content_length")
    assert served and served[0].headers_sent["Content-Length"] == str(200_000 + wrong_by)
    assert_refused(tmp_path, rec["id"], result, "not archived")


# --------------------------------------------------------------------------- ranges


def test_a_resume_answered_from_elsewhere_restarts_cleanly(sim, tmp_path):
    """Rule: "Broken transfers resume: a resumed body starts where it was asked to." A 206
    that starts 1000 bytes before the asked offset is not appended: the file restarts from 0."""
    rec = sim.add_recording(size=500_000)
    sim.faults.set(drop_downloads=1, drop_after_bytes=200_000, shift_ranges=1, range_shift=-1000)
    result = archive(tmp_path, sim)
    answers = file_requests(sim)
    shifted = fired(sim, "shift_ranges")
    asked = 200_000 - RESUME_OVERLAP
    assert shifted and shifted[0].headers_sent["Content-Range"].startswith(f"bytes {asked - 1000}-")
    assert answers[-1].range == "bytes=0-"  # started again
    assert_archived_exactly(tmp_path, sim, rec["id"], result)


def download_once(sim, rec: dict, spool: Path, **kwargs) -> Download:
    connections = FileConnections(timeout=30, max_connections=2, user_agent="test")
    try:
        download = Download(connections, lambda refresh: SignedUrl(sim.download_url(rec["id"]), None), spool,
                            expected_size=rec["file_size"], label="test", backoff=0.05, **kwargs)
        download.run()
    finally:
        connections.close()
    return download


def test_the_content_range_start_check_alone_keeps_bytes_in_place(sim, tmp_path):
    """Rule: "a resumed body starts where it was asked to" (the Content-Range start check).
    With the overlap comparison off, a resume answered from 1000 bytes further on would be
    written at the asked offset, the missing tail fetched next, and a file of exactly file_size
    bytes, spliced, would reach the archive: only the start check stands in the way."""
    rec = sim.add_recording(size=500_000)
    sim.faults.set(drop_downloads=1, drop_after_bytes=200_000, shift_ranges=1, range_shift=+1000)
    download = download_once(sim, rec, tmp_path / "spool" / "f.part", overlap=0)
    answers = file_requests(sim)
    assert "shift_ranges" in answers[1].faults and answers[1].headers_sent["Content-Range"].startswith("bytes 201000-")
    assert answers[2].range == "bytes=0-"  # restarted, not continued
    assert download.offset == 500_000 and download.hasher.checksums().sha256 == sim.expected_sha256(rec["id"])


def test_the_etag_comparison_alone_catches_a_changed_file(sim, tmp_path):
    """Rule: "a resume never splices two versions of a file" (the 206's validator compared with
    the first answer's). A server that ignores If-Range answers the resume with the changed
    file's bytes and new ETag; with the overlap comparison off, only the ETag shows it."""
    rec = sim.add_recording(size=500_000)
    sim.faults.set(drop_downloads=1, drop_after_bytes=200_000, change_on_drop=True, ignore_if_range=True)
    download = download_once(sim, rec, tmp_path / "spool" / "f.part", overlap=0)
    answers = file_requests(sim)
    assert answers[1].status == 206 and answers[1].headers_sent["ETag"] != answers[0].headers_sent["ETag"]
    assert answers[2].range == "bytes=0-"
    assert download.hasher.checksums().sha256 == sim.expected_sha256(rec["id"], version=1)


def test_a_body_running_past_its_content_range_is_refused(sim, tmp_path):
    """Rule: "A download is complete and unaltered": an answer without Content-Length (chunked)
    whose body runs 5000 bytes past the range its Content-Range announced. For a file with no
    file_size (every audio file) nothing else would stop the extra bytes being archived."""
    rec = sim.add_recording(size=200_000, file_size=None)
    sim.faults.set(chunked=True, extra_bytes=5000)
    result = archive(tmp_path, sim, archive={"download_attempts": 2})
    over = fired(sim, "extra_bytes")
    assert over and over[0].bytes_sent == 205_000 and over[0].headers_sent["Content-Range"] == "bytes 0-199999/200000"
    assert_refused(tmp_path, rec["id"], result, "runs past the end its Content-Range announced")


def test_an_endless_body_is_cut_off_at_file_size(sim, tmp_path):
    """Rule: "a body longer than file_size is never archived", and it never fills the spool:
    a body with no announced length that runs far past file_size is stopped as soon as it
    passes it, not read to its end."""
    rec = sim.add_recording(size=100_000)
    sim.faults.set(chunked=True, total_unknown=True, size_mismatch={rec["id"]: 5_000_000})
    result = archive(tmp_path, sim)
    assert fired(sim, "size_mismatch")
    assert_refused(tmp_path, rec["id"], result, "longer than the API's file_size")
    assert result.summary.bytes_downloaded < 1_000_000  # well short of the 5.1 MB on offer


def test_a_short_body_with_no_length_anywhere_is_refused_by_the_download_itself(sim, tmp_path):
    """Rule: "a body shorter than file_size is never archived", at the Download class: the
    final check refuses it even when nothing else knew the length."""
    rec = sim.add_recording(size=300_000)
    sim.faults.set(chunked=True, total_unknown=True, size_mismatch={rec["id"]: -1})
    with pytest.raises(DownloadError, match="received 299999 bytes but the API's file_size is 300000"):
        download_once(sim, rec, tmp_path / "spool" / "f.part")


# --------------------------------------------------------------------------- the file changes under the URL


def test_a_file_changed_before_the_resume_is_taken_whole_via_if_range(sim, tmp_path):
    """The issue's defect: a break, then the server's file changes (same URL, same size, other
    bytes, a new ETag). The resume sends If-Range with the first ETag; the server answers 200
    with the whole new file, which is archived: one version, never a splice of two."""
    rec = sim.add_recording(size=600_000)
    original = sim.expected_sha256(rec["id"])
    sim.faults.set(drop_downloads=1, drop_after_bytes=250_000, change_on_drop=True)
    result = archive(tmp_path, sim)
    answers = file_requests(sim)
    assert "change_on_drop" in answers[0].faults and sim.file_version(rec["id"]) == 1
    assert answers[1].if_range == answers[0].headers_sent["ETag"] != answers[1].headers_sent["ETag"]
    assert answers[1].status == 200 and len(answers) == 2
    assert sim.expected_sha256(rec["id"]) != original
    assert_archived_exactly(tmp_path, sim, rec["id"], result)


def test_a_changed_file_behind_a_server_ignoring_if_range_is_caught_by_its_etag(sim, tmp_path):
    """The same change, from a server that ignores If-Range and answers 206 with the new
    version's ETag: the 206 is compared with the remembered ETag and the file restarts from 0."""
    rec = sim.add_recording(size=600_000)
    sim.faults.set(drop_downloads=1, drop_after_bytes=250_000, change_on_drop=True, ignore_if_range=True)
    result = archive(tmp_path, sim)
    answers = file_requests(sim)
    assert answers[1].status == 206 and "ignore_if_range" in answers[1].faults
    assert answers[2].range == "bytes=0-"
    assert_archived_exactly(tmp_path, sim, rec["id"], result)


def test_a_changed_file_under_an_unchanged_etag_is_caught_by_the_overlap(sim, tmp_path):
    """The same change from a store that keeps the old ETag and Last-Modified (validators
    cannot see it): the resumed answer repeats the spool's last bytes first, they differ, and
    the file restarts from 0."""
    rec = sim.add_recording(size=600_000)
    sim.faults.set(drop_downloads=1, drop_after_bytes=250_000, change_on_drop=True, stale_validators=True)
    result = archive(tmp_path, sim)
    answers = file_requests(sim)
    assert answers[1].status == 206 and "stale_validators" in answers[1].faults
    assert answers[1].headers_sent["ETag"] == answers[0].headers_sent["ETag"]
    assert answers[2].range == "bytes=0-"
    assert_archived_exactly(tmp_path, sim, rec["id"], result)


def test_last_modified_is_the_validator_when_there_is_no_etag(sim, tmp_path):
    """A server with Last-Modified only: If-Range carries the date, and a changed file comes
    back whole."""
    rec = sim.add_recording(size=600_000)
    sim.faults.set(drop_downloads=1, drop_after_bytes=250_000, change_on_drop=True, validators="last-modified")
    result = archive(tmp_path, sim)
    answers = file_requests(sim)
    assert "ETag" not in answers[0].headers_sent
    assert answers[1].if_range == answers[0].headers_sent["Last-Modified"] and answers[1].status == 200
    assert_archived_exactly(tmp_path, sim, rec["id"], result)


def test_without_any_validator_a_break_restarts_from_zero(sim, tmp_path):
    """A server with neither ETag nor Last-Modified: a resume could not be checked, so a break
    restarts the file from byte 0 (a changed file then comes back whole, never spliced)."""
    rec = sim.add_recording(size=600_000)
    sim.faults.set(drop_downloads=1, drop_after_bytes=250_000, change_on_drop=True, validators="none")
    result = archive(tmp_path, sim)
    answers = file_requests(sim)
    assert not {"ETag", "Last-Modified"} & set(answers[0].headers_sent)
    assert [r.range for r in answers] == ["bytes=0-", "bytes=0-"] and answers[1].if_range is None
    assert_archived_exactly(tmp_path, sim, rec["id"], result)


# --------------------------------------------------------------------------- encoding and timing


def test_gzip_despite_identity_is_decoded_into_the_true_file(sim, tmp_path):
    """A CDN that gzips the body although `Accept-Encoding: identity` was asked: the decoded
    bytes are the file (checked against file_size and archived), not the compressed ones."""
    rec = sim.add_recording(size=300_000)
    sim.faults.set(gzip_bodies=True)
    result = archive(tmp_path, sim)
    answers = fired(sim, "gzip_bodies")
    assert answers and answers[0].headers_sent["Content-Encoding"] == "gzip"
    assert int(answers[0].headers_sent["Content-Length"]) != 300_000
    assert_archived_exactly(tmp_path, sim, rec["id"], result)


@pytest.mark.parametrize(("delay", "timeout", "requests"), [(1.5, 20, 1), (3, 1, 2)],
                         ids=["within-the-timeout", "beyond-the-timeout"])
def test_a_very_slow_first_byte(sim, tmp_path, delay, timeout, requests):
    """A server that waits before its first byte: within the read timeout it is waited for (one
    request); beyond it that attempt times out and the next one succeeds."""
    rec = sim.add_recording(size=100_000)
    sim.faults.set(slow_first_byte=1, first_byte_seconds=delay)
    result = archive(tmp_path, sim, source={"timeout": timeout})
    answers = file_requests(sim)
    assert len(answers) == requests and "slow_first_byte" in answers[0].faults
    assert_archived_exactly(tmp_path, sim, rec["id"], result)


def test_an_empty_file_is_archived_although_its_range_is_unsatisfiable(sim, tmp_path):
    """A file of 0 bytes: `Range: bytes=0-` cannot be satisfied (S3 answers 416 with
    `bytes */0`); that is the whole, empty file, not an error."""
    rec = sim.add_recording(size=0)
    result = archive(tmp_path, sim)
    answers = file_requests(sim)
    assert [(r.status, r.headers_sent.get("Content-Range")) for r in answers] == [(416, "bytes */0")]
    assert result.exit_code == 0 and result.summary.archived == 1, result.summary.problems
    assert stored_digest(tmp_path / "nas", rec["id"]) == sim.expected_sha256(rec["id"])


@pytest.mark.parametrize("difference", [+1000, -1000], ids=["longer", "shorter"])
def test_an_announced_length_other_than_file_size_is_refused_before_the_body(sim, tmp_path, difference):
    """Rule: "a body longer or shorter than file_size is never archived", at its first line of
    defence: the file server announces (Content-Length) another length than the API's
    file_size, so the file is refused at once, with both lengths in the reason, and its body is
    never read (nothing downloaded), rather than streamed in full and refused at the end."""
    rec = sim.add_recording(size=600_000, audio=False)
    sim.recording(rec["id"])["file_size"] = 600_000 + difference  # what the API says; the file stays
    result = archive(tmp_path, sim)
    assert_refused(tmp_path, rec["id"], result, "announces 600000 bytes",
                   f"file_size is {600_000 + difference}")
    assert result.summary.bytes_downloaded == 0
