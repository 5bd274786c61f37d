"""Which blocks a feed holds, one bit each, most significant bit first.

The byte layout is the wire layout (block ``i`` is bit ``0x80 >> (i % 8)`` of byte
``i // 8``), so a bitfield can be sent in a Have message as it is. Storage keeps it in
fixed-size pages so that storing a block rewrites one small page, not the whole field.
"""

from __future__ import annotations

from collections.abc import Iterator

PAGE_BYTES = 1024
PAGE_BITS = PAGE_BYTES * 8

_MASKS = [0x80 >> i for i in range(8)]


class Bitfield:
    """A growable set of block indexes with a running count."""

    __slots__ = ("_bits", "count")

    def __init__(self, data: bytes = b"") -> None:
        self._bits = bytearray(data)
        self.count = _ones(self._bits)

    def __contains__(self, index: int) -> bool:
        byte = index >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & _MASKS[index & 7])

    def add(self, index: int) -> bool:
        """Set the bit; return True if it was not set before."""
        byte = index >> 3
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte + 1 - len(self._bits)))
        mask = _MASKS[index & 7]
        if self._bits[byte] & mask:
            return False
        self._bits[byte] |= mask
        self.count += 1
        return True

    def add_range(self, start: int, end: int) -> int:
        """Set bits ``start .. end-1`` (an append's blocks); return how many were new.

        Whole bytes are filled at once, so appending a million blocks costs a few
        slice assignments rather than a million bit operations.
        """
        if end <= start:
            return 0
        bits = self._bits
        first, last = start >> 3, (end - 1) >> 3
        if last >= len(bits):
            bits.extend(bytes(last + 1 - len(bits)))
        before = int.from_bytes(bits[first : last + 1]).bit_count()
        head = (0xFF >> (start & 7))
        tail = (0xFF << (7 - ((end - 1) & 7))) & 0xFF
        if first == last:
            bits[first] |= head & tail
        else:
            bits[first] |= head
            bits[first + 1 : last] = b"\xff" * (last - first - 1)
            bits[last] |= tail
        added = int.from_bytes(bits[first : last + 1]).bit_count() - before
        self.count += added
        return added

    def discard(self, index: int) -> bool:
        """Clear the bit; return True if it was set before."""
        if index not in self:
            return False
        self._bits[index >> 3] &= ~_MASKS[index & 7] & 0xFF
        self.count -= 1
        return True

    @property
    def end(self) -> int:
        """One past the highest index that could be set (a multiple of 8)."""
        return len(self._bits) * 8

    def any(self, start: int, end: int) -> bool:
        """Whether any index in ``start .. end-1`` is set."""
        end = min(end, len(self._bits) * 8)
        if start >= end:
            return False
        first, last = start >> 3, (end - 1) >> 3
        head = 0xFF >> (start & 7)
        tail = (0xFF << (7 - ((end - 1) & 7))) & 0xFF
        if first == last:
            return bool(self._bits[first] & head & tail)
        if self._bits[first] & head or self._bits[last] & tail:
            return True
        return self._bits.count(0, first + 1, last) != last - first - 1

    def to_bytes(self) -> bytes:
        return bytes(self._bits.rstrip(b"\x00"))

    def page(self, number: int) -> bytes:
        """The stored form of page ``number``: PAGE_BYTES bytes, zero padded."""
        chunk = self._bits[number * PAGE_BYTES : (number + 1) * PAGE_BYTES]
        return bytes(chunk).ljust(PAGE_BYTES, b"\x00")

    def replace(self, other: Bitfield) -> None:
        """Take ``other``'s bits (in place: holders of this object see them)."""
        self._bits, self.count = bytearray(other._bits), other.count

    def load_page(self, number: int, data: bytes) -> None:
        start = number * PAGE_BYTES
        if len(self._bits) < start + len(data):
            self._bits.extend(bytes(start + len(data) - len(self._bits)))
        old = self._bits[start : start + len(data)]
        self.count += _ones(data) - _ones(old)
        self._bits[start : start + len(data)] = data

    def first_missing(self, start: int, end: int) -> int | None:
        """The lowest index in ``start .. end-1`` that is not set, or None."""
        i = start
        while i < end:
            byte = i >> 3
            if byte >= len(self._bits):
                return i
            if (i & 7) == 0 and self._bits[byte] == 0xFF:
                i += 8
                continue
            if i not in self:
                return i
            i += 1
        return None

    def iter_set(self, start: int = 0, end: int | None = None) -> Iterator[int]:
        """The set indexes in ``start .. end-1``, ascending."""
        stop = len(self._bits) * 8 if end is None else min(end, len(self._bits) * 8)
        i = start
        while i < stop:
            if (i & 7) == 0 and self._bits[i >> 3] == 0:
                i += 8
                continue
            if i in self:
                yield i
            i += 1


def _ones(data: bytes | bytearray) -> int:
    """How many bits are set (one big-integer popcount, not a loop over bytes)."""
    return int.from_bytes(data).bit_count()
