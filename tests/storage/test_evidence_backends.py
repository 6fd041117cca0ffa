"""Signed manifests and BagIt export at every backend, each against its real server: the
signature is stored beside the manifest and checked by `verify`; a swapped signature is caught;
an export re-hashes the copy it reads and refuses one that was altered."""

from __future__ import annotations

import json

import bagit

from tests.helpers import config_dict, run_cli, to_toml


def signed_config(rig, sim, tmp_path, prefix):
    assert run_cli("keys", "generate", "--out", str(tmp_path / "k.pem")).returncode == 0
    raw = config_dict(tmp_path, sim, targets=[rig.target_settings("t", prefix)])
    raw["signing"] = {"key": str(tmp_path / "k.pem")}
    path = tmp_path / "config.toml"
    path.write_text(to_toml(raw))
    return path


def test_signatures_and_bags_at_every_backend(rig, sim, tmp_path, prefix):
    """Two recordings archived and signed: verify checks both signatures; export makes two bags
    `bagit` validates; then one signature swapped for the other and one video altered at the
    target: verify reports the bad signature, and the export of that recording is refused."""
    first, second = sim.add_recording(size=50_000), sim.add_recording(size=60_000)
    config = signed_config(rig, sim, tmp_path, prefix)
    assert run_cli("run", "--config", str(config)).returncode == 0
    ok = run_cli("verify", "--config", str(config), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["copies_checked"] == 6  # 2 videos, 2 manifests, 2 .sig

    bags = run_cli("export", "--config", str(config), "--bagit", str(tmp_path / "bags"), "--json")
    assert bags.returncode == 0, bags.stdout
    for rec in (first, second):
        bagit.Bag(str(tmp_path / "bags" / rec["id"])).validate()

    keys = rig.list_keys(prefix)
    sigs = sorted(k for k in keys if k.endswith(".sig"))
    assert len(sigs) == 2
    rig.raw_write(sigs[1], rig.raw_read(sigs[0]))
    video = next(k for k in keys if "video-" in k and first["id"] in k)
    original = rig.raw_read(video)
    rig.raw_write(video, original[:-1] + bytes([original[-1] ^ 1]))

    checked = run_cli("verify", "--config", str(config), "--json")
    problems = json.loads(checked.stdout)["problems"]
    assert checked.returncode == 1 and "bad-signature" in [p["state"] for p in problems]
    refused = run_cli("export", "--config", str(config), "--bagit", str(tmp_path / "bags2"), "--recording-id",
                      first["id"], "--json")
    assert refused.returncode == 1 and "no target holds a verified copy" in json.loads(refused.stdout)["problems"][0]
