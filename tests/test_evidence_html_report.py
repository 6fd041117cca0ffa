"""The auditor's HTML report, loaded in a real browser (headless Chromium): one self-contained
file (no external request, no script), every section rendered with the counts the ledger holds,
hostile values shown as text, and no console error. A screenshot is taken (the README's)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.helpers import config_dict, run_cli, to_toml

CHROMIUM = shutil.which("chromium")
HOSTILE = '<script>alert("x")</script>'
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (tests/run installs it)")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium, kept from every outside host (test-servers.md: A real browser)."""
    profile = tmp_path / "chromium-profile"
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--no-first-run", "--disable-component-update", "--disable-sync",
                           "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    """What the page wrote to the console or failed to load, as Chromium logs it."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "net::ERR" in line]


@pytest.fixture
def report(sim, tmp_path):
    """An archive with two targets, signed manifests, a recording lost past its deadline, a
    meeting title and a recording id carrying markup; its HTML report."""
    assert run_cli("keys", "generate", "--out", str(tmp_path / "k.pem")).returncode == 0
    now = datetime.now(timezone.utc)
    for days in (0, 0, 1, 2):
        when = now - timedelta(days=days, hours=1)
        sim.add_recording(size=20_000, invoked_time=when, started_time=when, stopped_time=when + timedelta(minutes=5),
                          meeting_title=HOSTILE if days == 1 else f"Weekly {days}")
    old = now - timedelta(days=9)
    sim.add_recording(size=20_000, invoked_time=old, started_time=old, stopped_time=old + timedelta(minutes=5))
    raw = config_dict(tmp_path, sim, targets=[{"name": "nas", "type": "local", "path": str(tmp_path / "nas")},
                                              {"name": "vault", "type": "local", "path": str(tmp_path / "vault")}],
                      archive={"lookback_days": 30})
    raw["signing"] = {"key": str(tmp_path / "k.pem")}
    config = tmp_path / "config.toml"
    config.write_text(to_toml(raw))
    run_cli("run", "--config", str(config))
    db = sqlite3.connect(tmp_path / "ledger.db")
    with db:  # a recording id with markup in it (the API's ids are checked, a ledger is not)
        rid = db.execute("SELECT id FROM recordings WHERE state='archived' LIMIT 1").fetchone()[0]
        for table, column in (("recordings", "id"), ("files", "recording_id"), ("copies", "recording_id"),
                              ("signatures", "recording_id")):
            db.execute(f"UPDATE {table} SET {column}=? WHERE {column}=?", (HOSTILE + rid, rid))
    db.close()
    out = tmp_path / "report.html"
    result = run_cli("report", "--config", str(config), "--format", "html", "--output", str(out))
    assert result.returncode == 0, result.stderr
    counts = json.loads(run_cli("report", "--config", str(config), "--json").stdout)
    return out, counts


def test_the_report_is_one_self_contained_file_with_no_script(report):
    """No script element, no external reference: nothing is fetched when it is opened."""
    out, _ = report
    text = out.read_text()
    assert "<script" not in text and "&lt;script&gt;" in text
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"url\(|@import", text, re.I)


@needs_chromium
def test_the_browser_renders_every_section_with_the_ledgers_counts(report, tmp_path):
    """Chromium's DOM: one table row per report row, a coverage bar pair per day, a recency bar
    per target with copies, the lost recording listed with why, the signatures counted; the
    hostile id and title are text (no script element in the DOM); the console stays empty."""
    out, counts = report
    result = chromium(tmp_path, "--dump-dom", out.as_uri())
    dom = result.stdout
    assert result.returncode == 0 and "</html>" in dom
    assert console_messages(result.stderr) == []
    assert "<script" not in dom and HOSTILE.replace("<", "&lt;").replace(">", "&gt;") in dom
    copies = dom.split('id="copies"')[1].split("</table>")[0]
    assert copies.count("<tr>") == counts["rows_count"] + 1  # the header row too
    coverage = dom.split('id="coverage-chart"')[1].split("</svg>")[0]
    days = {r["invoked_time"][:10] for r in counts["rows"]}
    assert coverage.count('class="bar ok"') == coverage.count('class="bar missing"') == len(days) >= 3
    recency = dom.split('id="recency-chart"')[1].split("</svg>")[0]
    assert recency.count("<text") == 2 and recency.count('class="bar recency"') >= 2
    lost = dom.split('id="lost"')[1].split("</table>")[0]
    assert lost.count("<tr>") == 2 and "RealtimeKit no longer serves the files" in lost
    assert re.search(r"Manifests: 8, signed: 8", dom)


@needs_chromium
def test_the_console_check_can_fail(tmp_path):
    """The console check sees a page's error (so its silence above means something)."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>console.error('boom')</script></body></html>")
    result = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert any("boom" in line for line in console_messages(result.stderr)), result.stderr[-2000:]


@needs_chromium
def test_a_screenshot_on_a_desktop_and_a_phone(report, tmp_path):
    """Screenshots at desktop and phone widths are PNGs; with RTK_REPORT_SCREENSHOT set the
    desktop one is kept there (docs/report.png in the README)."""
    out, _ = report
    for name, size in (("desktop.png", "1280,1800"), ("phone.png", "390,1600")):
        png = tmp_path / name
        result = chromium(tmp_path, f"--screenshot={png}", f"--window-size={size}", "--hide-scrollbars", out.as_uri())
        assert result.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", result.stderr[-2000:]
    if os.environ.get("RTK_REPORT_SCREENSHOT"):
        shutil.copyfile(tmp_path / "desktop.png", os.environ["RTK_REPORT_SCREENSHOT"])


def test_html_needs_an_output_file(sim, tmp_path):
    """`--format html` without --output (or --output without html): one usage line, exit 2."""
    config = tmp_path / "c.toml"
    config.write_text(to_toml(config_dict(tmp_path, sim)))
    result = run_cli("report", "--config", str(config), "--format", "html")
    assert result.returncode == 2 and "--output" in result.stderr
