"""Signed manifests: each manifest gets a detached Ed25519 signature beside it at each target,
`verify` checks it with the public key(s), `report` says which key signed what, and rotated
keys keep old signatures verifiable."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.session import run_archive, verify_archive
from tests.helpers import config_dict, run_cli, to_toml, write_config


def manifests(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(".json") and "manifest" in p.name)


def generate(tmp_path: Path, name: str) -> tuple[Path, str]:
    result = run_cli("keys", "generate", "--out", str(tmp_path / name), "--json")
    assert result.returncode == 0, result.stderr
    return tmp_path / name, json.loads(result.stdout)["key_id"]


def signed_config(tmp_path, sim, key: Path | None, public_keys: list[Path] = ()):
    """A configuration file (for the CLI too) that signs with `key` and also trusts `public_keys`."""
    raw = config_dict(tmp_path, sim)
    raw["signing"] = {**({"key": str(key)} if key else {}), "public_keys": [str(p) for p in public_keys]}
    path = tmp_path / "signed.toml"
    path.write_text(to_toml(raw))
    return load_config(path)


def verify(config):
    return verify_archive(config, target=None, since=None, until=None, deep=False)


@pytest.fixture
def signed(sim, tmp_path):
    for _ in range(2):
        sim.add_recording(size=40_000)
    key, kid = generate(tmp_path, "signing.pem")
    config = signed_config(tmp_path, sim, key)
    assert run_archive(config, command="test").exit_code == 0
    return config, kid


def test_keys_generate_writes_an_owner_only_private_key_and_never_overwrites(tmp_path):
    """`keys generate --out` writes the private key 0600 and PATH.pub; a second call to the same
    path is refused with one line (a key is never overwritten)."""
    key, kid = generate(tmp_path, "k.pem")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(kid) == 16
    assert (tmp_path / "k.pem.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = run_cli("keys", "generate", "--out", str(key))
    assert again.returncode == 2 and "never overwritten" in again.stderr and "Traceback" not in again.stderr


def test_every_manifest_is_signed_verify_passes_and_report_names_the_key(signed, tmp_path):
    """Each manifest has `<key>.sig` beside it naming the signing key; verify checks them all
    (ok), and `report` lists the key id for each manifest row."""
    config, kid = signed
    found = manifests(tmp_path / "nas")
    assert len(found) == 2
    for manifest in found:
        document = json.loads(Path(str(manifest) + ".sig").read_text())
        assert document["key_id"] == kid and document["algorithm"] == "ed25519"
    outcome = verify(config)
    assert outcome.problems == [] and sorted(set(outcome.signed_by.values())) == [kid]
    assert len(outcome.signed_by) == 2
    report = run_cli("report", "--config", str(config.path), "--json")
    rows = [r for r in json.loads(report.stdout)["rows"] if r["kind"] == "manifest"]
    assert len(rows) == 2 and {r["signed_by"] for r in rows} == {kid}


def test_a_swapped_signature_is_caught(signed, tmp_path):
    """Copying one manifest's (valid) signature over another's: verify reports a bad signature
    for that manifest, naming the key and saying the bytes do not match."""
    config, _ = signed
    first, second = manifests(tmp_path / "nas")
    Path(str(second) + ".sig").write_bytes(Path(str(first) + ".sig").read_bytes())
    problems = verify(config).problems
    assert [(p["state"], p["kind"]) for p in problems] == [("bad-signature", "manifest-signature")]
    assert problems[0]["key"].endswith(".sig") and second.name in problems[0]["key"]
    assert "does not match the manifest's bytes" in problems[0]["detail"]


def test_a_changed_manifest_byte_is_caught_by_its_signature(signed, tmp_path):
    """One byte of a manifest changed: besides the copy check's mismatch (which trusts the
    ledger's recorded digest), the signature, checked with the public key alone, fails too."""
    config, _ = signed
    victim = manifests(tmp_path / "nas")[0]
    data = bytearray(victim.read_bytes())
    index = data.index(b'"size": ') + len(b'"size": ')
    data[index] = ord("9") if data[index] != ord("9") else ord("8")
    victim.write_bytes(bytes(data))
    problems = verify(config).problems
    assert sorted(p["state"] for p in problems) == ["bad-signature", "mismatch"], problems
    assert all(victim.name in p["key"] for p in problems)


def test_a_missing_signature_is_caught(signed, tmp_path):
    """A deleted `.sig`: verify says the manifest has no signature."""
    config, _ = signed
    victim = manifests(tmp_path / "nas")[0]
    Path(str(victim) + ".sig").unlink()
    problems = verify(config).problems
    assert [p["state"] for p in problems] == ["bad-signature"] and "no signature" in problems[0]["detail"]


def test_rotation_keeps_old_signatures_verifiable(sim, tmp_path):
    """Recordings signed with an old key, then the key rotated: with the old public key listed in
    [signing] public_keys both generations verify; without it the old ones are reported as
    signed by an unknown key."""
    sim.add_recording(size=30_000)
    old, old_id = generate(tmp_path, "old.pem")
    assert run_archive(signed_config(tmp_path, sim, old), command="test").exit_code == 0
    sim.add_recording(size=30_000)
    new, new_id = generate(tmp_path, "new.pem")
    rotated = signed_config(tmp_path, sim, new, [tmp_path / "old.pem.pub"])
    assert run_archive(rotated, command="test").exit_code == 0
    outcome = verify(rotated)
    assert outcome.problems == [] and sorted(outcome.signed_by.values()) == sorted([old_id, new_id])
    forgotten = verify(signed_config(tmp_path, sim, new))
    assert [p["state"] for p in forgotten.problems] == ["bad-signature"]
    assert f"signed by key {old_id}, which is not among the configured public keys" in forgotten.problems[0]["detail"]


def test_a_signing_key_that_is_not_ed25519_is_a_clear_config_error(sim, tmp_path):
    """A [signing] key that is not an Ed25519 PEM key: `check`-like one-line error, no traceback."""
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    path = write_config(tmp_path, sim)
    path.write_text(path.read_text() + f'\n[signing]\nkey = "{bad}"\n')
    sim.add_recording(size=10_000)
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 2 and "[signing] key" in result.stderr and "Traceback" not in result.stderr


def test_check_names_the_signing_key_or_why_it_does_not_load(sim, tmp_path):
    """`check` with [signing]: an ok line naming the key id that signs and the public keys; a fail
    line (exit 1) for a key that is not Ed25519."""
    key, kid = generate(tmp_path, "k.pem")
    config = signed_config(tmp_path, sim, key)
    line = lambda result: next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "signing")
    assert kid in line(run_cli("check", "--config", str(config.path), "--json"))["detail"]
    key.write_text("not a key\n")
    failed = run_cli("check", "--config", str(config.path), "--json")
    assert failed.returncode == 1 and line(failed)["status"] == "fail" and "[signing] key" in line(failed)["detail"]
