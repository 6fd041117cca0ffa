"""Quantities as people write them in the configuration and on the command line: sizes with
rclone's suffixes in bytes and powers of 1024 (`500G`, `50M`, `512K`, `100`), time budgets, and
bandwidth limits, optionally on a schedule like rclone's (`"08:00,10M 19:00,off"`). Used by the
config's validation and by the run's budgets (pipeline.archive.budget)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from pipeline.clock import duration_seconds

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from `500G`, `50M`, `512K`, `1.5G` or a plain number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _SIZE.fullmatch(str(text).strip())
        if not match:
            raise ValueError(f"{text!r} is not a size: use a number of bytes with K, M, G or T (500G, 50M)")
        value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value <= 0:
        raise ValueError(f"{text!r} must be more than 0 bytes")
    return value


def parse_duration(text: str | int | float) -> float:
    """A time budget in seconds (pipeline.clock's reading of durations); it must be above 0."""
    seconds = duration_seconds(text)
    if seconds <= 0:
        raise ValueError(f"{text!r} must be a duration longer than 0")
    return seconds

@dataclass(frozen=True)
class BandwidthSchedule:
    """A rate, or rates by time of day: [(minute of the day, bytes/s or None for off)], sorted."""

    slots: tuple[tuple[int, int | None], ...]

    def rate_at(self, moment: datetime) -> int | None:
        if len(self.slots) == 1 and self.slots[0][0] == 0:
            return self.slots[0][1]
        minute = moment.hour * 60 + moment.minute
        current = self.slots[-1][1]  # before the first slot of the day: the last one of the day before
        for start, rate in self.slots:
            if start <= minute:
                current = rate
        return current


def parse_bwlimit(text: str) -> BandwidthSchedule:
    """`50M`, `off`, or a schedule `"08:00,10M 19:00,off"` (local time of day, like rclone)."""
    value = str(text).strip()
    if "," not in value:
        return BandwidthSchedule(((0, _rate(value)),))
    slots = []
    for entry in value.split():
        match = re.fullmatch(r"([01]?[0-9]|2[0-3]):([0-5][0-9]),(\S+)", entry)
        if not match:
            raise ValueError(f"{entry!r} is not a schedule entry: use HH:MM,RATE (08:00,10M 19:00,off)")
        slots.append((int(match.group(1)) * 60 + int(match.group(2)), _rate(match.group(3))))
    starts = [start for start, _ in slots]
    if len(set(starts)) != len(starts):
        raise ValueError(f"{text!r}: a time of day appears twice")
    return BandwidthSchedule(tuple(sorted(slots)))


def _rate(text: str) -> int | None:
    return None if text.lower() in ("off", "0") else parse_size(text)


def size_text(size: int) -> str:
    """A size as written: `500G` when it is a whole number of a unit, else bytes."""
    for unit in ("T", "G", "M", "K"):
        if size >= _UNITS[unit] and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size} bytes"
