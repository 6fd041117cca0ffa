"""A property-based sweep (hypothesis) over configuration values, command lines and API
payload shapes served by the simulator, asserting the README's promises for all of them:
no traceback, an exit code from the documented set, the last-resort handler never needed,
one JSON object whenever --json was asked for, and object keys that never leave the target's
prefix.

The examples are derandomised (the same every run, so CI is stable); set RTK_SWEEP_RANDOM=1 to
explore new ones, and RTK_SWEEP_EXAMPLES=N for more of them."""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipeline import errors
from pipeline.archive import object_keys as keys
from pipeline.config import parse_config
from pipeline.errors import ConfigError
from pipeline.simulator import STATUSES, Simulator
from storage.target import check_key
from tests.helpers import cli_command, cli_env, config_dict, to_toml
from tests.inprocess import run_main

SCALE = int(os.environ.get("RTK_SWEEP_EXAMPLES", "1"))
EXPLORE = bool(os.environ.get("RTK_SWEEP_RANDOM"))
# In CI a failing example is reported as found (shrinking a whole archive run can take many
# minutes); when exploring, hypothesis shrinks it to the smallest one.
SWEEP = settings(deadline=None, database=None, derandomize=not EXPLORE, print_blob=True,
                 phases=list(Phase) if EXPLORE else [Phase.explicit, Phase.reuse, Phase.generate],
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def assert_no_traceback(result, argv=()) -> None:
    """The promises every outcome keeps (README "Exit codes")."""
    assert result.returncode in errors.EXIT_CODES, (argv, result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, (argv, result.stderr)
    assert "rtk-archive: internal error" not in result.stderr, (argv, result.stderr)  # the last resort never fires
    for line in result.stderr.splitlines():
        assert not line.startswith(("  File ", "--- Logging error")), (argv, result.stderr)


@pytest.fixture(scope="module")
def sweep_sim():
    with Simulator(recordings=0, seed=11, min_size=1_000, max_size=20_000) as simulator:
        yield simulator


# --------------------------------------------------------------------------- configuration values

ANY_VALUE = st.one_of(
    st.integers(min_value=-(10 ** 20), max_value=10 ** 20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
TEMPLATE_PIECES = ["{recording_id}", "{kind}", "{file_name}", "{meeting_id}", "{session_id}", "{yyyy}", "{mm}",
                   "{dd}", "/", "..", ".", "{{", "}}", "{", "}", "\\", "x", "-", "{nope}", "{recording_id:3}",
                   "{kind!r}", "\x00", " ", "é", "%", "?", "#"]
TEMPLATES = st.lists(st.sampled_from(TEMPLATE_PIECES), max_size=10).map("".join)
CONFIG_KEYS = {
    "source": ["per_page", "timeout", "max_retries", "max_retry_seconds", "account_id", "app_id", "base_url",
               "api_token"],
    "archive": ["concurrency", "url_refresh_margin_seconds", "deadline_margin_hours", "lookback_days",
                "download_attempts", "upload_attempts", "retry_max_seconds", "manifest", "key_template", "spool_dir"],
    "ledger": ["path"], "audit": ["path", "ship_to"],
}
OVERRIDES = st.lists(
    st.sampled_from([(section, key) for section, names in CONFIG_KEYS.items() for key in names]).flatmap(
        lambda where: st.tuples(st.just(where), TEMPLATES if where[1] == "key_template" else ANY_VALUE)),
    max_size=4)
HOSTILE_TEXT = st.one_of(st.sampled_from(["..", ".", "/", "../../etc/passwd", "/abs", "\x00", "a\\b", "", " ",
                                          "C:\\x", "\u202e", "x" * 400]), st.text(max_size=40))


@settings(SWEEP, max_examples=300 * SCALE)
@given(overrides=OVERRIDES, template=TEMPLATES, values=st.lists(HOSTILE_TEXT, min_size=4, max_size=4))
def test_config_values_load_or_give_one_line_and_keys_stay_inside(overrides, template, values):
    """README "Configuration" and "What rtk-archive guarantees": any value in any key loads or
    is refused with one line naming the key; a template that loads gives, for any API values,
    a key that check_key accepts and that stays under the target's prefix."""
    data = {"source": {"account_id": "acc", "app_id": "app"},
            "targets": [{"name": "n", "type": "local", "path": "/srv/rec", "key_template": template}]}
    for (section, key), value in overrides:
        data.setdefault(section, {})[key] = value
    try:
        config = parse_config(data, environ={})
    except ConfigError as exc:
        lines = str(exc).splitlines()
        assert lines and all(line.startswith("<config>: ") for line in lines)
        return
    for target in config.targets:
        used = target.key_template or config.archive.key_template
        rid, file_name, meeting, session = values
        rendered = set()
        for recording_id in (rid, rid + "-other"):
            for kind in (keys.VIDEO, keys.AUDIO, keys.MANIFEST):
                key = keys.render_key(used, recording_id=recording_id, kind=kind, file_name=file_name,
                                      meeting_id=meeting, session_id=session,
                                      when=datetime(2026, 11, 20, tzinfo=timezone.utc))
                check_key(key)
                assert posixpath.normpath(posixpath.join("/srv/rec", key)).startswith("/srv/rec/")
                rendered.add(key)
        if keys.sanitise_component(rid, fallback="x") != keys.sanitise_component(rid + "-other", fallback="x"):
            assert len(rendered) == 6, (used, rendered)  # two recordings, three kinds: six keys


NUMBER_KEYS = [("source", "per_page"), ("source", "timeout"), ("source", "max_retries"),
               ("source", "max_retry_seconds"), ("archive", "concurrency"), ("archive", "url_refresh_margin_seconds"),
               ("archive", "deadline_margin_hours"), ("archive", "lookback_days"), ("archive", "download_attempts"),
               ("archive", "upload_attempts"), ("archive", "retry_max_seconds")]
NUMBERS = st.one_of(st.integers(min_value=-(10 ** 18), max_value=10 ** 18),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, 1, 1e12, 10 ** 15]))


@settings(SWEEP, max_examples=40 * SCALE)
@given(numbers=st.lists(st.tuples(st.sampled_from(NUMBER_KEYS), NUMBERS), min_size=1, max_size=3),
       command=st.sampled_from([("status",), ("run", "--dry-run"), ("list",)]))
def test_config_numbers_through_the_cli(sweep_sim, numbers, command):
    """README "Configuration": any number in the file (negative, zero, huge, inf, nan) either
    works or is one line naming the key, exit 2; never a traceback when the command uses it."""
    folder = Path(tempfile.mkdtemp(prefix="rtk-sweep-config-"))
    try:
        data = config_dict(folder, sweep_sim)
        for (section, key), value in numbers:
            data[section][key] = value
        data["source"].setdefault("max_retry_seconds", 2)
        config = folder / "config.toml"
        config.write_text(to_toml(data))
        result = run_main(*command, "--config", str(config), "--json")
        assert_no_traceback(result, numbers)
        if result.returncode == errors.EXIT_USAGE:  # one line per problem, each naming the file and key
            assert all(line.startswith(f"rtk-archive: error: {config}: ") for line in result.stderr.splitlines())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- command lines

WORDS = st.one_of(st.sampled_from(["7d", "36h", "2w", "0d", "999999w", "2026-11-01", "2026-11-01T08:00:00Z",
                                   "2099-01-01", "0", "-1", "1e12", "inf", "nan", "64", "65", "", "x", "--json",
                                   "table", "json", "csv", "nas", "elsewhere"]),
                  st.integers(min_value=-(10 ** 25), max_value=10 ** 25).map(str), st.text(max_size=8))
OPTIONS = {
    "run": ["--since", "--until", "--meeting-id", "--concurrency", "--dry-run", "--json", "-v", "-q"],
    "backfill": ["--since", "--until", "--meeting-id", "--concurrency", "--dry-run", "--json", "-v", "-q"],
    "status": ["--json", "-v", "-q"],
    "list": ["--since", "--until", "--meeting-id", "--all-statuses", "--json", "-q"],
    "verify": ["--since", "--until", "--target", "--deep", "--json", "-q"],
    "report": ["--since", "--until", "--format", "--json", "-q"],
    "audit verify": ["--json", "-q"],
}
FLAGS = {"--dry-run", "--json", "-v", "-q", "--all-statuses", "--deep"}


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(sorted(OPTIONS)))
    argv = command.split()
    for option in draw(st.lists(st.sampled_from(OPTIONS[command]), max_size=5)):
        argv.append(option)
        if option not in FLAGS:
            argv.append(draw(WORDS))
    if draw(st.booleans()):
        argv.insert(draw(st.integers(0, len(argv))), draw(WORDS))  # a stray word anywhere
    return argv


@pytest.fixture(scope="module")
def sweep_config(sweep_sim, tmp_path_factory):
    for size in (5_000, 9_000):
        sweep_sim.add_recording(size=size, audio=True)
    folder = tmp_path_factory.mktemp("cli-sweep")
    path = folder / "config.toml"
    path.write_text(to_toml(config_dict(folder, sweep_sim)))
    return path


@settings(SWEEP, max_examples=40 * SCALE)
@given(argv=command_lines())
def test_command_lines_give_a_documented_outcome(sweep_config, argv):
    """README "Exit codes" and the --json contract: any command line ends with a documented
    exit code, no traceback, and exactly one JSON object when --json was asked for."""
    argv = [*argv, "--config", str(sweep_config)] if argv[0] != "--config" else argv
    result = run_main(*argv)
    assert_no_traceback(result, argv)
    if "--json" in argv:
        payload = json.loads(result.stdout)
        assert payload["exit_code"] == result.returncode
        assert (payload["error"] is None) == (result.returncode == 0)


@pytest.mark.parametrize("argv", [
    ["run", "--concurrency", "0", "--json"],
    ["backfill", "--since", "999999w", "--json"],
    ["list", "--since", "2026-02-30"],
    ["report", "--format", "json", "--until", "\x7f"],
])
def test_a_few_command_lines_as_real_processes(sweep_config, argv):
    """The same promises from a real process (exit status, stderr as a cron mail shows it)."""
    result = subprocess.run(cli_command(*argv, "--config", str(sweep_config)), capture_output=True, text=True,
                            env=cli_env(), timeout=60, stdin=subprocess.DEVNULL)
    assert_no_traceback(result, argv)
    assert result.returncode == errors.EXIT_USAGE and len(result.stderr.splitlines()) == 1


# --------------------------------------------------------------------------- API payload shapes

TIMES = st.one_of(st.none(), st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1),
                                          timezones=st.just(timezone.utc)),
                  st.sampled_from(["", "yesterday", "2026-11-31T00:00:00Z", "0000-00-00", "9999-12-31T23:59:59Z"]),
                  st.integers(min_value=-10 ** 12, max_value=10 ** 12))
PAYLOADS = st.fixed_dictionaries({}, optional={
    "status": st.one_of(st.sampled_from(STATUSES), st.text(max_size=6), st.none(), st.integers()),
    "output_file_name": st.one_of(HOSTILE_TEXT, st.none(), st.integers()),
    "file_size": st.one_of(st.none(), st.integers(min_value=-10 ** 15, max_value=10 ** 15), st.floats(),
                           st.text(max_size=6), st.booleans()),
    "meeting_id": st.one_of(HOSTILE_TEXT, st.none()),
    "session_id": st.one_of(HOSTILE_TEXT, st.none(), st.integers()),
    "invoked_time": TIMES,
    "stopped_time": TIMES,
    "audio": st.booleans(),
    "recording_duration": st.one_of(st.none(), st.integers(), st.text(max_size=4)),
    "unknown_extra": st.one_of(st.none(), st.text(max_size=4), st.lists(st.integers(), max_size=2)),
})


def _shaped(overrides: dict) -> dict:
    """add_recording takes datetimes and strings for times; anything else goes in as raw JSON."""
    out = dict(overrides)
    for key in ("invoked_time", "stopped_time"):
        if isinstance(out.get(key), int):
            out[key] = str(out[key])
    if out.get("status") is None or not isinstance(out.get("status"), str):
        raw_status = out.pop("status", None)
        out["status"] = "UPLOADED"
        out["raw_status"] = raw_status
    return out


@settings(SWEEP, max_examples=25 * SCALE)
@given(payloads=st.lists(PAYLOADS, min_size=1, max_size=3))
def test_api_payload_shapes_never_crash_a_run_or_escape_the_prefix(sweep_sim, payloads):
    """README "Hostile input is contained": whatever shape the API's recordings take, `run`
    ends with a documented exit code and one JSON object, no traceback, and every file it
    writes lies inside the target's folder (or the ledger's, spool's and audit log's places)."""
    folder = Path(tempfile.mkdtemp(prefix="rtk-sweep-"))
    added = []
    try:
        for overrides in payloads:
            shaped = _shaped(overrides)
            raw_status = shaped.pop("raw_status", None)
            try:
                rec = sweep_sim.add_recording(**shaped)
            except (ValueError, TypeError, OverflowError):
                continue  # the simulator cannot build this one (not the archiver's input)
            if raw_status is not None or "status" in overrides and overrides["status"] is None:
                rec["status"] = raw_status
            added.append(rec["id"])
        config = folder / "config.toml"
        # Few API retries: a payload the simulator itself cannot serve must not cost minutes.
        config.write_text(to_toml(config_dict(folder, sweep_sim, archive={"lookback_days": 0},
                                              source={"max_retries": 1, "max_retry_seconds": 2})))
        result = run_main("run", "--config", str(config), "--json")
        assert_no_traceback(result)
        payload = json.loads(result.stdout)
        assert payload["exit_code"] == result.returncode
        allowed = {"nas", "spool", "ledger.db", "ledger.db-wal", "ledger.db-shm", "ledger.db.lock", "audit.jsonl",
                   "config.toml"}
        assert {p.name for p in folder.iterdir()} <= allowed
        nas = (folder / "nas").resolve()
        for path in folder.rglob("*"):
            if path.is_relative_to(folder / "nas"):
                assert path.resolve().is_relative_to(nas)
    finally:
        for rid in added:
            sweep_sim.remove_recording(rid)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_deadline_in_the_year_9999_is_unknown_not_a_crash():
    """Found by the payload sweep: a stopped_time near the year 9999 overflowed the deadline
    computation (stopped_time + 7 days) and would have crashed the run; the deadline is now
    unknown, as for a recording without times."""
    from types import SimpleNamespace

    from pipeline.archive.plan import deadline_of

    far = datetime(9999, 12, 31, 23, 59, tzinfo=timezone.utc)
    for fields in ({"stopped_time": far, "download_url_expiry": None, "invoked_time": None},
                   {"stopped_time": None, "download_url_expiry": None, "invoked_time": far}):
        assert deadline_of(SimpleNamespace(**fields)) is None
