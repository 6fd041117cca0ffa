"""What a person sees (README "Command line"): the progress numbers are right on a resumed run,
with unknown sizes and with failures, and on a real terminal (a pty, read back through a
terminal emulator) the bar shows each file in flight while log lines print whole above it."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time

import pyte

from pipeline.cli.progress import Tally
from tests.helpers import cli_command, cli_env, write_config


def test_resumed_bytes_count_as_done_but_not_as_speed():
    """README "Command line" (progress): a file resumed at byte 50 of 100 starts half done,
    its resumed bytes are not speed, and the run ends at 100%."""
    tally = Tally()
    tally.start([100, 40])
    resumed = tally.begin("a video", 100)
    tally.update(resumed, 10, 60, 100)  # the first chunk lands at byte 60: 50 were there already
    assert (tally.resumed, tally.fetched, tally.done_bytes, tally.total_bytes) == (50, 10, 60, 140)
    tally.update(resumed, 40, 100, 100)
    tally.finish(resumed, archived=True)
    fresh = tally.begin("b video", 40)
    tally.update(fresh, 40, 40, 40)
    tally.finish(fresh, archived=True)
    assert tally.done_bytes == tally.total_bytes == 140 and tally.fetched == 90
    assert tally.describe() == "2/2 files, 0.0 MB resumed"


def test_an_unknown_size_means_an_unknown_total_until_it_is_announced():
    """README "Command line" (progress): audio exports have no size in the API; the total is
    unknown (never a wrong fraction) until their download announces one, or they finish."""
    tally = Tally()
    tally.start([100, None, None])
    assert tally.total_bytes is None and "2 sizes not yet known" in tally.describe()
    announced = tally.begin("a audio", None)
    tally.update(announced, 10, 10, 30)  # Content-Length: 30
    assert tally.total_bytes is None and "1 size not yet known" in tally.describe()
    chunked = tally.begin("b audio", None)  # no Content-Length at all
    tally.update(chunked, 25, 25, None)
    tally.finish(chunked, archived=True)
    assert tally.total_bytes == 155  # 100 + 30 + the 25 the chunked one turned out to be
    video = tally.begin("c video", 100)
    tally.update(video, 100, 100, 100)
    tally.finish(video, archived=True)
    tally.update(announced, 20, 30, 30)
    tally.finish(announced, archived=True)
    assert tally.done_bytes == tally.total_bytes == 155


def test_a_failed_file_leaves_the_total_and_a_restart_goes_back():
    """README "Command line" (progress): a file that fails leaves the total (the bar still ends
    full); a download that restarts from byte 0 goes back instead of counting twice."""
    tally = Tally()
    tally.start([100, 100])
    failing = tally.begin("a video", 100)
    tally.update(failing, 30, 30, 100)
    tally.finish(failing, archived=False)
    assert (tally.done_bytes, tally.total_bytes, tally.files_failed) == (0, 100, 1)
    restarted = tally.begin("b video", 100)
    tally.update(restarted, 60, 60, 100)
    tally.update(restarted, 10, 10, 100)  # the server ignored Range: from the start again
    assert tally.done_bytes == 10 and tally.fetched == 30 + 60 + 10
    tally.update(restarted, 90, 100, 100)
    tally.finish(restarted, archived=True)
    assert tally.done_bytes == tally.total_bytes == 100 and "1 failed" in tally.describe()


def _run_on_a_terminal(args, columns=200, rows=120):
    """Run the CLI with stderr on a pty and replay what it drew through a terminal emulator.
    Returns (the final screen with its history, the most per-file rows seen at once)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = cli_env({"COLUMNS": str(columns), "LINES": str(rows), "TERM": "xterm-256color"})
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(cli_command(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                            env=env)
    os.close(slave)
    screen = pyte.HistoryScreen(columns, rows, history=5000)
    stream = pyte.ByteStream(screen)
    per_file = re.compile(r"^\s+[0-9a-f-]{36} (video|audio)\b")
    most_in_flight = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            stream.feed(data)
            most_in_flight = max(most_in_flight, sum(1 for line in screen.display if per_file.match(line)))
        elif proc.poll() is not None:
            break
    os.close(master)
    proc.wait(timeout=30)
    history = ["".join(char.data for char in line.values()) for line in screen.history.top]
    return proc.returncode, history + list(screen.display), most_in_flight


def test_the_terminal_shows_files_in_flight_and_log_lines_stay_whole(sim, tmp_path):
    """README "Command line": on a terminal the bar shows each file in flight with its own
    progress, removed when done, under the run's total; `-v` log lines print through the same
    console, so every archived file's line is whole on the screen (a log written past the
    live display would be overdrawn by the bar's next refresh)."""
    recordings = [sim.add_recording(size=1_200_000) for _ in range(4)]
    sim.faults.set(throttle_bps=1_500_000)
    config = write_config(tmp_path, sim, archive={"concurrency": 2})
    code, screen, most_in_flight = _run_on_a_terminal(["run", "--config", str(config), "-v"])
    assert code == 0
    assert most_in_flight >= 2  # two downloads at once, each with its own row
    text = "\n".join(screen)
    for rec in recordings:
        sha = sim.expected_sha256(rec["id"])
        assert sha in text, f"the log line of {rec['id']} was broken by the progress display"
    assert not any(re.match(r"^\s+[0-9a-f-]{36} (video|audio)\b", line) for line in screen)  # all removed
    assert any("archiving 4/4 files" in line for line in screen)


def test_a_recording_id_with_markup_is_shown_as_text():
    """Hostile input is contained (found beyond the issue's list): a recording id such as
    "[/]x" in a file's row is text, not rich markup that would break the display."""
    import io

    from rich.console import Console

    from pipeline.cli.progress import RichProgress

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    progress = RichProgress(console)
    progress.start([10])
    shown = progress.file("[/]rec [red]1 video", 10)
    shown.update(5, 5, 10)
    progress._bar.refresh()
    shown.done(True)
    progress.close()
    assert "[/]rec [red]1 video" in console.file.getvalue()
