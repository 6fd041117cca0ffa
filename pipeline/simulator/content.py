"""Deterministic file contents: each (recording, kind) is a ~1 MiB pseudo-random block of prime
length, repeated, computed on demand and never stored. The prime length keeps the pattern from
lining up with power-of-two chunk sizes, so a resume at a wrong offset gives other bytes."""

from __future__ import annotations

import hashlib
import math
import random
import threading
from collections import OrderedDict
from collections.abc import Iterator


def _is_prime(n: int) -> bool:
    if n < 2 or n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


def _primes_from(start: int, count: int) -> tuple[int, ...]:
    found: list[int] = []
    n = start
    while len(found) < count:
        if _is_prime(n):
            found.append(n)
        n += 1
    return tuple(found)


BLOCK_PRIMES = _primes_from(1 << 20, 16)  # all a little over 1 MiB


class Blocks:
    """Per (recording, variant) pseudo-random blocks, doubled so any window of a period is one slice."""

    def __init__(self, cache_size: int = 8) -> None:
        self._cache: OrderedDict[tuple[str, str], memoryview] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def get(self, recording_id: str, variant: str) -> tuple[memoryview, int]:
        """(block twice over, period)."""
        key = (recording_id, variant)
        with self._lock:
            doubled = self._cache.get(key)
            if doubled is not None:
                self._cache.move_to_end(key)
                return doubled, len(doubled) // 2
        seed, period = _seed(recording_id, variant)
        block = random.Random(seed).randbytes(period)
        doubled = memoryview(block + block)
        with self._lock:
            self._cache[key] = doubled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return doubled, period

    def windows(self, recording_id: str, variant: str, start: int, end: int, max_chunk: int) -> Iterator[memoryview]:
        """The bytes [start, end) as memoryview slices of at most max_chunk bytes."""
        seed, period = _seed(recording_id, variant)
        if end <= period - period % 4:  # within the block's whole words (a small file): draw only that much
            yield from _slices(memoryview(_block_prefix(seed, end)), start, end, max_chunk)
            return
        doubled, period = self.get(recording_id, variant)
        max_chunk = max(1, min(max_chunk, period))
        pos = start
        while pos < end:
            phase = pos % period
            n = min(end - pos, max_chunk)
            yield doubled[phase : phase + n]
            pos += n

    def read(self, recording_id: str, variant: str, start: int, end: int) -> bytes:
        """The bytes [start, end) in one piece (for tests and small bodies)."""
        return b"".join(bytes(w) for w in self.windows(recording_id, variant, start, end, 1 << 20))

    def sha256(self, recording_id: str, variant: str, length: int) -> str:
        digest = hashlib.sha256()
        for window in self.windows(recording_id, variant, 0, length, 1 << 20):
            digest.update(window)
        return digest.hexdigest()


def _seed(recording_id: str, variant: str) -> tuple[int, int]:
    """The block's random seed and its length (its period)."""
    digest = hashlib.sha256(f"{recording_id}/{variant}".encode()).digest()
    return int.from_bytes(digest[:16], "big"), BLOCK_PRIMES[digest[0] % len(BLOCK_PRIMES)]


def _block_prefix(seed: int, length: int) -> bytes:
    """The block's first `length` bytes without drawing the whole ~1 MiB block (a small file
    costs the simulator microseconds, not milliseconds): `randbytes` draws 32-bit words in
    order, so a draw of whole words is the beginning of any longer draw from the same seed
    (the block's own last, partial word differs: the caller stays within its whole words)."""
    return random.Random(seed).randbytes(-(-length // 4) * 4)[:length]


def _slices(view: memoryview, start: int, end: int, max_chunk: int) -> Iterator[memoryview]:
    for pos in range(start, end, max(1, max_chunk)):
        yield view[pos : min(end, pos + max_chunk)]
