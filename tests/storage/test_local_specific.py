"""What only the `local` adapter does: the final link that never overwrites, the path guard
that keeps a key inside the folder even through a symbolic link, and the copy that works
whatever the two file systems are."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

import storage.local as local_module
from storage import LocalFile, ObjectConflict, PermanentStorageError, build_target, settings_model
from storage.target import PARTIAL_MARKER, PROBE_PREFIX
from tests.storage.files import local_file, write


def target_at(folder: Path):
    return build_target(settings_model("local").model_validate({"name": "nas", "type": "local", "path": str(folder)}))


@pytest.mark.parametrize("disposable", [False, True], ids=["copied", "taken-by-link"])
def test_a_name_taken_at_the_moment_of_linking_is_never_overwritten(tmp_path, monkeypatch, disposable):
    """README "a local copy never overwrites" (Targets: "hard link to the final name (atomic,
    never overwrites)"): another writer creates the final name after the temporary file is
    complete and fsynced, right before the final step. link(2) refuses the taken name, so the
    other file stays byte for byte and the put raises ObjectConflict. With rename/replace in
    that step, this test fails."""
    folder = tmp_path / "nas"
    source = write(tmp_path, "ours.bin", os.urandom(64_000))
    if disposable:  # the spool file, taken by hard link on the same file system
        source = LocalFile(path=source.path, size=source.size, checksums=source.checksums, disposable=True)
    theirs = os.urandom(10_000)
    final = folder / "rec" / "video.mp4"
    real_fsync = os.fsync
    fired = []

    def fsync_then_someone_writes(fd: int) -> None:
        real_fsync(fd)
        if not fired and PARTIAL_MARKER in os.readlink(f"/proc/self/fd/{fd}"):
            fired.append(fd)  # our temporary is complete: the very last moment before linking
            final.write_bytes(theirs)

    monkeypatch.setattr(local_module.os, "fsync", fsync_then_someone_writes)
    with target_at(folder) as target, pytest.raises(ObjectConflict) as info:
        target.put(source, "rec/video.mp4")
    assert fired, "the other writer never got in: the test proved nothing"
    assert "not overwritten" in str(info.value)
    assert final.read_bytes() == theirs
    assert [p.name for p in final.parent.iterdir()] == ["video.mp4"]  # no temporary left


def test_a_symbolic_link_inside_the_folder_cannot_carry_a_copy_out(tmp_path):
    """README "a key never leaves the target's prefix": a key that check_key accepts (no `..`)
    but whose first component is a symbolic link to another folder is refused by the path
    guard, for put, stat and read; nothing is written where the link points."""
    folder, elsewhere = tmp_path / "nas", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    (folder / "escape").symlink_to(elsewhere)
    (elsewhere / "there.mp4").write_bytes(b"not the archive's")
    src = write(tmp_path, "s", b"symlink")
    with target_at(folder) as target:
        for attempt in (lambda: target.put(src, "escape/video.mp4"), lambda: target.stat("escape/there.mp4"),
                        lambda: target.open_read("escape/there.mp4").__enter__()):
            with pytest.raises(PermanentStorageError) as info:
                attempt()
            assert "resolves outside" in str(info.value) and "target 'nas'" in str(info.value)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["there.mp4"]


def test_a_link_deeper_in_the_key_or_at_its_end_is_followed_and_checked(tmp_path):
    """The guard looks at every existing component of the key, not only the first: a folder
    link two levels down, or the file itself a link to one outside, is refused; a link that
    stays inside the folder is followed (the copy lands where it points)."""
    folder, elsewhere = tmp_path / "nas", tmp_path / "elsewhere"
    (folder / "2026" / "12").mkdir(parents=True)
    (folder / "inside").mkdir()
    elsewhere.mkdir()
    (folder / "2026" / "12" / "out").symlink_to(elsewhere)
    (folder / "2026" / "12" / "in").symlink_to(folder / "inside")
    (elsewhere / "there.mp4").write_bytes(b"not the archive's")
    (folder / "2026" / "file.mp4").symlink_to(elsewhere / "there.mp4")
    src = write(tmp_path, "s", b"symlink")
    with target_at(folder) as target:
        for key in ("2026/12/out/video.mp4", "2026/12/out/there.mp4", "2026/file.mp4"):
            with pytest.raises(PermanentStorageError, match="resolves outside"):
                target.stat(key)
        with pytest.raises(PermanentStorageError, match="resolves outside"):
            target.put(src, "2026/12/out/new/video.mp4")
        stored = target.put(src, "2026/12/in/video.mp4")
        assert stored.size == 7
    assert (folder / "inside" / "video.mp4").read_bytes() == b"symlink"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["there.mp4"]


class _NoFileno(io.BytesIO):
    pass


def test_copy_through_a_buffer_refuses_a_short_source(tmp_path):
    """The buffered copy (another file system, a stream) never leaves a short file looking
    complete: a source that ends early is an error."""
    with open(tmp_path / "out", "wb") as out, pytest.raises(OSError, match="source ended after 5 of 10 bytes"):
        local_module._copy(_NoFileno(b"12345"), out, 10)


def test_copy_continues_from_where_the_kernel_stopped(tmp_path, monkeypatch):
    """copy_file_range may copy part of a file and then refuse (a file system that supports it
    only for some ranges): the buffered copy goes on from that offset, and the result is the
    whole file, byte for byte."""
    data = os.urandom(3 * local_module.COPY_BUFFER // 2)
    (tmp_path / "src").write_bytes(data)
    real = os.copy_file_range
    calls = []

    def once_then_refuse(src_fd, dst_fd, count, *args):
        calls.append(count)
        if len(calls) == 1:
            return real(src_fd, dst_fd, 1000)
        raise OSError(local_module.errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(local_module.os, "copy_file_range", once_then_refuse)
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "xb") as dst:
        local_module._copy(src, dst, len(data))
    assert len(calls) == 2
    assert (tmp_path / "dst").read_bytes() == data
    assert local_file(tmp_path / "dst").checksums == local_file(tmp_path / "src").checksums


def test_a_sweep_with_an_age_leaves_temporaries_still_being_written(tmp_path):
    """On a shared ledger other workers upload while one starts: its sweep removes only the
    temporaries not written for `older_than` seconds (abandoned by a killed process), never one
    another process is writing now; without an age every temporary goes (one run at a time)."""
    folder = tmp_path / "nas"
    (folder / "rec").mkdir(parents=True)
    abandoned = folder / "rec" / f".video.mp4{PARTIAL_MARKER}old"
    in_flight = folder / "rec" / f".audio.m4a{PARTIAL_MARKER}new"
    probing = folder / PROBE_PREFIX / "0123456789abcdef"  # another worker's start-up probe, now
    probing.parent.mkdir()
    for path in (abandoned, in_flight, probing):
        path.write_bytes(b"partial")
    an_hour_ago = abandoned.stat().st_mtime - 3600
    os.utime(abandoned, (an_hour_ago, an_hour_ago))
    target = target_at(folder)
    assert target.sweep_partials(older_than=900) == 1
    assert not abandoned.exists() and in_flight.exists() and probing.exists()
    assert target.sweep_partials() == 2 and not in_flight.exists()
    assert not probing.parent.exists()  # a probe killed before its removal leaves nothing behind either


def test_a_sweep_with_an_age_removes_at_once_what_a_process_gone_from_this_host_left(tmp_path):
    """A temporary names the process that writes it: a worker SIGKILLed a moment ago left one
    that is fresh, yet the next sweep on this host removes it (its process is gone), while one
    a live process (this one) writes stays."""
    import subprocess

    from storage.target import partial_name

    gone = subprocess.Popen(["true"])
    gone.wait()
    folder = tmp_path / "nas"
    folder.mkdir()
    ours = folder / partial_name("video.mp4")
    ours.write_bytes(b"being written")
    theirs = folder / ours.name.replace(f".{os.getpid()}.", f".{gone.pid}.")
    theirs.write_bytes(b"left by a killed worker")
    assert target_at(folder).sweep_partials(older_than=900) == 1
    assert ours.exists() and not theirs.exists()


def test_folders_a_put_creates_are_made_durable_in_their_parents(tmp_path, monkeypatch):
    """A copy under folders that did not exist: after the link, the file's folder is fsynced
    and so is the parent of every folder the put created (else a power cut could take the new
    folder, and the archived file in it, away while the ledger says archived)."""
    synced: list[Path] = []
    real = local_module._fsync_dir
    monkeypatch.setattr(local_module, "_fsync_dir", lambda path: (synced.append(Path(path)), real(path)))
    root = tmp_path / "nas"
    root.mkdir()
    target = build_target(settings_model("local")(name="nas", type="local", path=str(root)))
    (root / "2026").mkdir()
    target.put(write(tmp_path, "src.bin", b"x" * 1000), "2026/11/30/rec/video.mp4")
    assert synced == [root / "2026/11/30/rec", root / "2026/11/30", root / "2026/11", root / "2026"]
    synced.clear()
    target.put(write(tmp_path, "src2.bin", b"y" * 1000), "2026/11/30/rec/audio.m4a")
    assert synced == [root / "2026/11/30/rec"]  # nothing new created: only the file's folder
