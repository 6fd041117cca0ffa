"""BagIt export (RFC 8493): one bag per recording, payload read back from a verified target with
its SHA-256 re-checked, the rtk-archive manifest, its signature and the recording's audit lines as
tag files; validated by the Library of Congress `bagit` library, which catches a changed byte."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import bagit
import pytest

from tests.helpers import run_cli, to_toml, config_dict


def export(config: Path, out: Path, *extra: str) -> tuple[int, dict]:
    result = run_cli("export", "--config", str(config), "--bagit", str(out), "--json", *extra)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
def two_targets(sim, tmp_path):
    """Three recordings archived at two local targets, manifests signed."""
    assert run_cli("keys", "generate", "--out", str(tmp_path / "k.pem")).returncode == 0
    recordings = [sim.add_recording(size=30_000 + i * 1000) for i in range(3)]
    raw = config_dict(tmp_path, sim, targets=[{"name": "a", "type": "local", "path": str(tmp_path / "a")},
                                              {"name": "b", "type": "local", "path": str(tmp_path / "b")}])
    raw["signing"] = {"key": str(tmp_path / "k.pem")}
    path = tmp_path / "config.toml"
    path.write_text(to_toml(raw))
    assert run_cli("run", "--config", str(path)).returncode == 0
    return path, recordings


def test_each_recording_becomes_a_bag_that_bagit_validates(two_targets, sim, tmp_path):
    """Three bags, each valid for `bagit` (payload manifest, tag manifest, Payload-Oxum); the
    payload is the archived file, byte for byte; the tag files hold the signed manifest and the
    recording's own audit lines (whole, with their hashes)."""
    config, recordings = two_targets
    code, result = export(config, tmp_path / "bags")
    assert code == 0 and len(result["bags"]) == 3 and result["problems"] == []
    for rec in recordings:
        bag = bagit.Bag(str(tmp_path / "bags" / rec["id"]))
        bag.validate()  # raises BagValidationError on any mismatch
        assert bag.info["External-Identifier"] == rec["id"]
        payload = [Path(bag.path) / p for p in bag.payload_files()]
        assert len(payload) == 1
        assert hashlib.sha256(payload[0].read_bytes()).hexdigest() == sim.expected_sha256(rec["id"], "video")
        tags = Path(bag.path) / "rtk-archive"
        manifest = json.loads((tags / "manifest.json").read_text())
        assert manifest["recording"]["id"] == rec["id"]
        assert json.loads((tags / "manifest.json.sig").read_text())["algorithm"] == "ed25519"
        lines = [json.loads(line) for line in (tags / "audit-excerpt.jsonl").read_text().splitlines()]
        assert lines and {line["recording_id"] for line in lines} == {rec["id"]}
        assert {"verified", "manifest_stored", "manifest_signed"} <= {line["action"] for line in lines}


def test_a_changed_payload_byte_in_a_bag_is_caught_by_bagit(two_targets, tmp_path):
    """One byte of an exported payload file changed: `bagit` validation fails naming the file."""
    config, recordings = two_targets
    assert export(config, tmp_path / "bags", "--recording-id", recordings[0]["id"])[0] == 0
    bag_path = tmp_path / "bags" / recordings[0]["id"]
    payload = next((bag_path / "data").iterdir())
    data = bytearray(payload.read_bytes())
    data[100] ^= 0x01
    payload.write_bytes(bytes(data))
    with pytest.raises(bagit.BagValidationError) as caught:
        bagit.Bag(str(bag_path)).validate()
    assert payload.name in str(caught.value.details) or payload.name in str(caught.value)


def test_an_altered_copy_is_passed_over_for_a_verified_one(two_targets, sim, tmp_path):
    """The copy at the first target altered (same size): the export re-hashes it, passes it
    over and reads the second target's copy; the bag holds the original bytes."""
    config, recordings = two_targets
    rid = recordings[1]["id"]
    victim = next(p for p in (tmp_path / "a").rglob("video-*") if rid in str(p))
    data = bytearray(victim.read_bytes())
    data[10] ^= 0xFF
    victim.write_bytes(bytes(data))
    code, _ = export(config, tmp_path / "bags", "--recording-id", rid)
    assert code == 0
    bag = bagit.Bag(str(tmp_path / "bags" / rid))
    bag.validate()
    payload = Path(bag.path) / next(iter(bag.payload_files()))
    assert hashlib.sha256(payload.read_bytes()).hexdigest() == sim.expected_sha256(rid, "video")


def test_no_verified_copy_anywhere_means_no_bag_and_a_problem(two_targets, tmp_path):
    """Both copies altered: no bag (no partial folder left either), exit 1, and the reason names
    each target with what was read."""
    config, recordings = two_targets
    rid = recordings[2]["id"]
    for root in ("a", "b"):
        victim = next(p for p in (tmp_path / root).rglob("video-*") if rid in str(p))
        victim.write_bytes(b"x" + victim.read_bytes()[1:])
    code, result = export(config, tmp_path / "bags", "--recording-id", rid)
    assert code == 1 and result["bags"] == [] and len(result["problems"]) == 1
    assert "a: read" in result["problems"][0] and "b: read" in result["problems"][0]
    assert list((tmp_path / "bags").iterdir()) == []


def test_an_existing_bag_is_never_overwritten(two_targets, tmp_path):
    """Exporting twice into the same folder: the second export reports the bags as existing and
    leaves them as they were."""
    config, recordings = two_targets
    assert export(config, tmp_path / "bags")[0] == 0
    marker = tmp_path / "bags" / recordings[0]["id"] / "bag-info.txt"
    before = marker.read_bytes()
    code, result = export(config, tmp_path / "bags")
    assert code == 1 and len(result["problems"]) == 3 and all("never overwritten" in p for p in result["problems"])
    assert marker.read_bytes() == before


def test_an_unknown_recording_id_is_a_clear_problem(two_targets, tmp_path):
    """`--recording-id` of a recording the ledger does not know: one line, exit 1."""
    config, _ = two_targets
    code, result = export(config, tmp_path / "bags", "--recording-id", "nope")
    assert code == 1 and result["problems"] == ["recording nope: not in the ledger (in this window)"]


def test_export_check_finds_a_changed_byte_an_added_file_and_a_swapped_signature(two_targets, tmp_path):
    """`export --check`: whole bags pass; then one payload byte changed, a file added to another
    bag's payload, and a third bag's manifest signature swapped for another's: each is named."""
    config, recordings = two_targets
    assert export(config, tmp_path / "bags")[0] == 0
    check = run_cli("export", "--config", str(config), "--check", str(tmp_path / "bags"), "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["bags_checked"] == 3
    first, second, third = (tmp_path / "bags" / rec["id"] for rec in recordings)
    payload = next((first / "data").iterdir())
    payload.write_bytes(b"X" + payload.read_bytes()[1:])
    (second / "data" / "extra.txt").write_text("not archived")
    swapped = (first / "rtk-archive" / "manifest.json.sig").read_bytes()
    (third / "rtk-archive" / "manifest.json.sig").write_bytes(swapped)
    check = run_cli("export", "--config", str(config), "--check", str(tmp_path / "bags"), "--json")
    problems = json.loads(check.stdout)["problems"]
    assert check.returncode == 1 and set(problems) == {str(first), str(second), str(third)}
    assert any("(changed)" in p for p in problems[str(first)])
    assert any("extra.txt" in p and "(added)" in p for p in problems[str(second)])
    assert any("does not match the manifest's bytes" in p for p in problems[str(third)])
