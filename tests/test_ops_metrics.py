"""Prometheus metrics (issue 12): after every command that records, `[metrics] textfile` is
rewritten atomically in the text format node_exporter's textfile collector reads; it parses
with prometheus_client's own parser, follows the naming practice, labels by target and never
by recording id; `build_registry` is the one builder (the `serve` mode exposes the same)."""

from __future__ import annotations

import json
import threading

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.metrics import build_registry, write_textfile
from tests.helpers import config_dict, expected_files, run_cli, to_toml


def _samples(path) -> dict[tuple[str, tuple], float]:
    text = path.read_text()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _config(tmp_path, sim, **extra):
    raw = config_dict(tmp_path, sim, targets=[{"name": "nas", "type": "local", "path": str(tmp_path / "nas")},
                                              {"name": "usb", "type": "local", "path": str(tmp_path / "usb")}])
    raw["metrics"] = {"textfile": str(tmp_path / "textfile" / "rtk_archive.prom")}
    raw.update(extra)
    path = tmp_path / "config.toml"
    path.write_text(to_toml(raw))
    (tmp_path / "textfile").mkdir(exist_ok=True)
    return path, tmp_path / "textfile" / "rtk_archive.prom"


def test_run_and_verify_write_a_textfile_prometheus_parses(sim, tmp_path):
    """After `run`: the last run's times, exit code and counts, copies per target and state, at
    risk and lost; after `verify`: the last verify time moves on. Every value matches what the
    command reported, and no label is a recording id."""
    for _ in range(3):
        sim.add_recording(size=40_000, audio=True)
    config, textfile = _config(tmp_path, sim)
    result = run_cli("run", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    samples = _samples(textfile)
    files = len(expected_files(sim))
    assert samples[("rtk_archive_last_run_exit_code", ())] == 0
    assert samples[("rtk_archive_last_run_files_archived", ())] == files == summary["files_archived"]
    assert samples[("rtk_archive_last_run_downloaded_bytes", ())] == summary["bytes_downloaded"] > 0
    start = samples[("rtk_archive_last_run_start_timestamp_seconds", ())]
    end = samples[("rtk_archive_last_run_end_timestamp_seconds", ())]
    assert end >= start > 1.7e9
    assert samples[("rtk_archive_last_success_timestamp_seconds", ())] == end
    assert samples[("rtk_archive_last_run_duration_seconds", ())] == end - start
    for target in ("nas", "usb"):
        # Each recording file, and each recording's manifest, at each target.
        assert samples[("rtk_archive_copies", (("state", "archived"), ("target", target)))] == files + 3
        assert samples[("rtk_archive_verify_problems", (("target", target),))] == 0
    assert samples[("rtk_archive_recordings_at_risk", ())] == 0
    assert samples[("rtk_archive_recordings_lost_total", ())] == 0
    assert samples[("rtk_archive_files_archived_total", ())] == files
    recording_ids = {raw["id"] for raw in sim.recordings}
    for _name, labels in samples:
        assert not {value for _key, value in labels} & recording_ids
    stored = samples[("rtk_archive_last_verify_timestamp_seconds", (("target", "nas"),))]

    (next((tmp_path / "nas").rglob("audio-*"))).write_bytes(b"altered")
    verify = run_cli("verify", "--config", str(config), "--target", "nas", "--deep")
    assert verify.returncode == 1, verify.stderr
    after = _samples(textfile)
    assert after[("rtk_archive_last_verify_timestamp_seconds", (("target", "nas"),))] > stored
    # The good copy checked longest ago at usb (not verified since the run): checked during the run.
    usb_oldest = after[("rtk_archive_oldest_verification_timestamp_seconds", (("target", "usb"),))]
    assert start - 1 <= usb_oldest <= after[("rtk_archive_last_verify_timestamp_seconds", (("target", "usb"),))]
    assert after[("rtk_archive_verify_problems", (("target", "nas"),))] == 1
    assert after[("rtk_archive_verify_problems", (("target", "usb"),))] == 0
    # The last run's metrics stay (from the ledger); its download count is the run's own.
    assert after[("rtk_archive_last_run_exit_code", ())] == 0
    assert ("rtk_archive_last_run_downloaded_bytes", ()) not in after


def test_a_failed_run_shows_its_exit_code_and_keeps_the_last_success(sim, tmp_path):
    """A run that fails (the API refuses the token: exit 4) is the last run, with its exit
    code; the last success stays the earlier run's end, so `time() - last_success > 26h` fires."""
    sim.add_recording(size=20_000, audio=False)
    config, textfile = _config(tmp_path, sim)
    assert run_cli("run", "--config", str(config)).returncode == 0
    success = _samples(textfile)[("rtk_archive_last_success_timestamp_seconds", ())]
    raw = config_dict(tmp_path, sim)
    raw["source"]["api_token"] = "wrong-token-0123456789"
    raw["metrics"] = {"textfile": str(textfile)}
    bad = tmp_path / "bad.toml"
    bad.write_text(to_toml(raw))
    failed = run_cli("run", "--config", str(bad))
    assert failed.returncode == 4, failed.stderr
    samples = _samples(textfile)
    assert samples[("rtk_archive_last_run_exit_code", ())] == 4
    assert samples[("rtk_archive_last_success_timestamp_seconds", ())] == success
    assert "wrong-token-0123456789" not in textfile.read_text()


def test_a_textfile_that_cannot_be_written_is_a_warning_only(sim, tmp_path):
    """A textfile folder that does not exist: one warning naming it; the run's exit code and
    summary are unchanged."""
    sim.add_recording(size=20_000, audio=False)
    config, textfile = _config(tmp_path, sim)
    textfile.parent.rmdir()
    result = run_cli("run", "--config", str(config), "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["files_archived"] == 1
    assert "metrics: cannot write" in result.stderr and str(textfile) in result.stderr
    assert "Traceback" not in result.stderr


def test_the_textfile_is_replaced_atomically(tmp_path):
    """A reader polling the file while it is rewritten hundreds of times, alternating a short
    and a long exposition, only ever sees one of the two whole texts (temp file + rename)."""
    short, long = CollectorRegistry(), CollectorRegistry()
    Gauge("rtk_archive_test_short", "short", registry=short).set(1)
    many = Gauge("rtk_archive_test_long", "long", ["target"], registry=long)
    for index in range(2000):
        many.labels(f"t{index}").set(index)
    wholes = {generate_latest(short), generate_latest(long)}
    path = tmp_path / "rtk.prom"
    write_textfile(path, short)
    done = threading.Event()
    seen: list[bytes] = []

    def read():
        while not done.is_set():
            seen.append(path.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for index in range(300):
            write_textfile(path, long if index % 2 else short)
    finally:
        done.set()
        reader.join()
    assert seen and set(seen) <= wholes, "a reader saw a partial file"
    assert len(set(seen)) == 2 or len(seen) < 10  # it saw both versions (when it read often enough)
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind
    for family in text_string_to_metric_families(path.read_text()):
        assert family.name.startswith("rtk_archive_")


def test_build_registry_reads_the_ledger_at_each_collection(sim, tmp_path):
    """build_registry(ledger) is a plain function; a registry collected twice reads the ledger
    twice (what a /metrics endpoint needs), and an empty ledger yields no made-up values."""
    from pipeline.config import parse_config
    from pipeline.session import open_session

    config = parse_config(config_dict(tmp_path, sim), environ={})
    with open_session(config, "metrics", record=False) as context:
        empty = generate_latest(build_registry(context.ledger)).decode()
    assert "\nrtk_archive_last_run_exit_code " not in empty and "\nrtk_archive_recordings_at_risk 0.0" in empty
    sim.add_recording(size=20_000, audio=False)
    config_path, _ = _config(tmp_path, sim)
    assert run_cli("run", "--config", str(config_path)).returncode == 0
    with open_session(config, "metrics", record=False) as context:
        registry = build_registry(context.ledger)
        assert "rtk_archive_last_run_exit_code 0.0" in generate_latest(registry).decode()


def test_a_ledger_that_cannot_be_read_leaves_the_metrics_with_a_warning(sim, tmp_path):
    """The ledger path is a folder: the run fails with exit 74 and its one line; the metrics
    step adds a warning, no traceback, and the exit code stays 74."""
    sim.add_recording(size=20_000, audio=False)
    config, textfile = _config(tmp_path, sim)
    (tmp_path / "ledger.db").mkdir()
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 74, result.stderr
    assert "metrics: not written" in result.stderr and "Traceback" not in result.stderr
    assert not textfile.exists()
