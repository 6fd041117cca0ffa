"""How a ranged download (pipeline.archive.ranged) cuts a file into pieces, and how many
streams fetch them: the ramp, which starts a file over one connection and doubles them while
that raises its rate, as TCP's slow start does with its window."""

from __future__ import annotations

import time
from dataclasses import dataclass

MIN_PIECE = 1 << 20  # (files above the default cutoff get 16 MiB and up, as AWS advises for ranged GETs)
# A piece is at least this long where the file has one per stream even so: each is a request,
# which costs a near server and this process more than its bytes (1 MiB pieces of 64 MiB files
# ran 10% slower on loopback; 8 MiB ones left a long path's streams idle at the end)
PIECE = 4 << 20
MAX_PIECE = 256 << 20
RAMP_SECONDS = 0.1  # the file's rate is measured over this long before a stream is added ...
FIRST_STREAMS = 1  # streams a file starts with (then doubled while that pays)
RAMP_GAIN = 1.25  # ... and a stream stays only if it raised the rate by this much
# Where the streams added carried nearly as much each as those before (each stream is held
# back by the path, not by this machine), the next increase is four times, not two: a long
# path fills in half the intervals, and a near server never gets there (its first doubling
# does not pay).
RAMP_LEAP = 0.9


@dataclass
class Piece:
    start: int
    done: int  # the next byte to write; [start, done) is in the spool
    end: int  # exclusive

    @property
    def complete(self) -> bool:
        return self.done >= self.end


def split(total: int, streams: int) -> list[Piece]:
    """Pieces of MIN_PIECE..MAX_PIECE, about four per stream (so a slow one is not the tail),
    and of at least PIECE while that still gives every stream one."""
    size = min(MAX_PIECE, max(MIN_PIECE, -(-total // (streams * 4)), min(PIECE, -(-total // streams))))
    return [Piece(start, start, min(total, start + size)) for start in range(0, total, size)]


class Ramp:
    """How many streams a file should use now, from its rate, as TCP's slow start: twice as
    many after each interval in which the last increase raised the rate by RAMP_GAIN (four
    times as many when it raised it in proportion, RAMP_LEAP); back to
    the count before it (and no more tries) when it did not. Rates are measured over intervals
    of RAMP_SECONDS."""

    def __init__(self, start: int, *, settled: bool = False):
        self.mark, self.when = start, time.monotonic()
        self.before: tuple[int, float] | None = None  # (streams, rate) before the last increase
        self.settled = settled  # no more changes

    def streams_wanted(self, position: int, streams: int, allowed: int, *, saturated: bool = False,
                       answered: bool = True, cpu_bound: bool = False) -> int:
        """`saturated`: the run's connections are all in use (streams wait for one): then a
        stream that did not raise the rate says nothing of the path; it stays, and takes a
        connection when another file's ends. `answered`: every stream has had its first
        answer; until then the interval starts again (a new stream's connect, TLS and first
        round trip are not the path's rate: counted, they would take back every stream on a
        long path). `cpu_bound`: this machine's cores are all busy (pipeline.archive.cpu_gauge):
        no stream is added now (it would only take CPU from the others, and each file's own rate
        would rise at the others' expense); the ramp goes on once they are not."""
        now = time.monotonic()
        if not answered:
            self.mark, self.when = position, now
            return min(streams, allowed)
        if now - self.when < RAMP_SECONDS * 0.9:  # (a worker that ended early woke the join)
            return min(streams, allowed)
        rate = (position - self.mark) / (now - self.when)
        self.mark, self.when = position, now
        if self.settled or streams > allowed:  # a 429/503 lowered `allowed`: never ramp after it
            self.settled = True
            return min(streams, allowed)
        if self.before is not None and rate < self.before[1] * RAMP_GAIN:
            if saturated:
                return min(streams, allowed)
            self.settled = True
            return self.before[0]
        if cpu_bound:
            self.before = None  # (holding is no increase: the next one is judged from then)
            return min(streams, allowed)
        linear = self.before is not None and rate / streams >= RAMP_LEAP * self.before[1] / self.before[0]
        self.before = (streams, rate)
        return min(streams * (4 if linear else 2), allowed)
