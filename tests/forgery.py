"""A forger's alteration: other bytes of the same length with the same CRC32C.

CRC32C is linear over GF(2), so whoever can write a stored file can change some bytes and fix
four others so that size and CRC32C stay as they were. Only re-hashing the bytes with SHA-256
(`verify --deep`) tells the two files apart; tests use this to prove exactly that."""

from __future__ import annotations

import google_crc32c


def _crc(data: bytes) -> int:
    return int.from_bytes(google_crc32c.Checksum(data).digest(), "big")


def same_crc32c_alteration(data: bytes, at: int = 1000) -> bytes:
    """`data` with byte `at` flipped and the four bytes after it chosen so that the CRC32C of
    the whole is unchanged."""
    assert len(data) >= at + 5
    zero = _crc(bytes(len(data)))

    def effect(delta: dict[int, int]) -> int:  # the CRC change a delta (position -> xor mask) causes
        buf = bytearray(len(data))
        for position, mask in delta.items():
            buf[position] = mask
        return _crc(bytes(buf)) ^ zero

    target = effect({at: 0xFF})
    # One column per bit of the four correction bytes; solve columns * x = target over GF(2).
    columns = [effect({at + 1 + bit // 8: 1 << (bit % 8)}) for bit in range(32)]
    rows = [(columns[bit], 1 << bit) for bit in range(32)]  # (effect, which correction bits)
    basis: dict[int, tuple[int, int]] = {}  # leading bit of effect -> (effect, bits)
    for value, bits in rows:
        for lead in sorted(basis, reverse=True):
            if value >> lead & 1:
                value ^= basis[lead][0]
                bits ^= basis[lead][1]
        if value:
            basis[value.bit_length() - 1] = (value, bits)
    remaining, chosen = target, 0
    for lead in sorted(basis, reverse=True):
        if remaining >> lead & 1:
            remaining ^= basis[lead][0]
            chosen ^= basis[lead][1]
    assert remaining == 0, "the four correction bytes always span every CRC change"
    forged = bytearray(data)
    forged[at] ^= 0xFF
    for bit in range(32):
        if chosen >> bit & 1:
            forged[at + 1 + bit // 8] ^= 1 << (bit % 8)
    assert _crc(bytes(forged)) == _crc(data) and bytes(forged) != data
    return bytes(forged)
