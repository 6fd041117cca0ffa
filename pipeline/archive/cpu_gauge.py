"""Is this machine's CPU what limits the downloads now? The ramp (pipeline.archive.pieces) adds
streams to a file only while the path is the limit: where every core is busy (a near server,
loopback, several large files at once), another stream only takes CPU from the streams already
running, and each one costs more (a connection, its requests, pieces written out of order)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

BUSY_AT = 0.9  # the share of the machine's CPU time not idle over the last interval
MIN_INTERVAL = 0.05  # seconds: shorter intervals are a few clock ticks, too coarse to judge


class CpuGauge:
    """The machine's busy share since the last look, from /proc/stat (every process, not only
    this one: a file server or another job on the same cores limits as much). Where there is no
    /proc/stat (not Linux), it never says busy: the ramp then judges by rates alone."""

    def __init__(self, stat: Path = Path("/proc/stat")):
        self._stat = stat
        self._lock = threading.Lock()
        self._busy = False
        # (idle, total) clock ticks at the last look; the first is taken now, so the first
        # question is answered from the time since (a run's first ramp comes within a second)
        self._last, self._when = self._sample(), time.monotonic()

    def busy(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._when < MIN_INTERVAL:
                return self._busy  # (several files' ramps ask at once: one look serves them)
            sample = self._sample()
            if sample is not None and self._last is not None:
                idle, total = sample[0] - self._last[0], sample[1] - self._last[1]
                self._busy = total > 0 and 1 - idle / total >= BUSY_AT
            self._last, self._when = sample, now
            return self._busy

    def _sample(self) -> tuple[int, int] | None:
        try:
            with open(self._stat, "rb") as fh:
                fields = [int(x) for x in fh.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        if len(fields) < 5:
            return None
        # user nice system idle iowait irq softirq steal (guest time is already in user)
        return fields[3] + fields[4], sum(fields)


MACHINE = CpuGauge()  # one per process: every download's ramp asks the same
