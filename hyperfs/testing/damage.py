"""Damaging stored blocks behind hyperfs's back, as a failing disk would, for the tests
and the stress suite that check such damage is caught and never returned."""

from __future__ import annotations

import os
from collections.abc import Callable

from hyperfs.store.store import Store


def damage_block(db: str | os.PathLike[str], feed_id: bytes, index: int,
                 change: Callable[[bytes], bytes]) -> bytes:
    """Replace block ``index`` of feed ``feed_id`` in its data file by ``change(old)`` (cut
    or padded with zeros to the block's length), while nothing has the database open;
    returns the bytes now on disk."""
    store = Store(db)
    try:
        num = store.lookup(feed_id)
        assert num is not None, f"feed {feed_id.hex()} is not stored"
        place = store.data.place_of(num, index)
    finally:
        store.close()
    assert place is not None, f"block {index} is not stored"
    file, offset, length = place
    with open(file, "r+b") as data:
        data.seek(offset)
        old = data.read(length)
        new = change(old)[:length].ljust(length, b"\0")
        data.seek(offset)
        data.write(new)
    return new


def flip_a_byte(data: bytes) -> bytes:
    """``data`` with one bit of its middle byte flipped."""
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x40
    return bytes(damaged)

