"""Message framing on a byte stream: `varint(length) || payload`, as length-prefixed-stream.

`FrameDecoder` is incremental: feed it whatever chunks the transport delivers and it
returns the payloads completed so far. Like the reference's decoder it

- rejects a length over the limit (5 MiB by default) as soon as the prefix says so, and a
  prefix longer than the limit's own varint needs (4 bytes for 5 MiB), before buffering a
  single payload byte;
- skips zero-length frames (the reference never delivers them).

Cost: a payload that arrives whole inside one chunk is one slice copy, or none with
``views=True`` (then it is a read-only memoryview of the chunk, which it keeps alive: for a
receiver that is done with each payload before it reads on, as a peer is with a block it
hashes and writes); a payload spread over several chunks is kept as zero-copy memoryviews
of those chunks and joined once when complete. So every payload byte is copied at most
once, and nothing is ever re-copied as more data arrives (no quadratic buffer growth for
64 KiB blocks trickling in).
"""

from __future__ import annotations

from hyperfs.wire.protobuf import Buffer, ProtocolError, encode_varint

__all__ = ["MAX_MESSAGE", "FrameDecoder", "ProtocolError", "frame"]

MAX_MESSAGE = 5 * 1024 * 1024


def frame(payload: bytes) -> bytes:
    """Prefix a payload with its length."""
    return encode_varint(len(payload)) + payload


class FrameDecoder:
    """Split a byte stream into payloads; ProtocolError on an oversized or bad prefix.

    After a ProtocolError the stream is unusable (the error is raised again on every
    further `feed`): there is no way to resynchronise a length-prefixed stream.
    """

    __slots__ = ("_error", "_length", "_limit", "_max_shift", "_missing", "_parts", "_shift",
                 "_views")

    def __init__(self, limit: int = MAX_MESSAGE, *, views: bool = False) -> None:
        self._limit = limit
        self._views = views  # payloads whole in a chunk as views of it (module docstring)
        self._max_shift = 7 * len(encode_varint(limit))
        self._length = 0  # value of the prefix read so far
        self._shift = 0  # bits of prefix read so far
        self._missing = 0  # payload bytes still to come; 0 while reading a prefix
        self._parts: list[memoryview] = []  # received pieces of the current payload
        self._error: ProtocolError | None = None

    @property
    def partial(self) -> bool:
        """Whether part of a frame (prefix or payload) has arrived but not all of it: a
        peer's watchdog times how long a message takes, against slowloris senders."""
        return bool(self._missing or self._shift)

    def feed(self, data: Buffer) -> list[Buffer]:
        """Consume a chunk; return the payloads it completed, in order (bytes, or with
        ``views`` read-only memoryviews of ``data`` where a payload lay whole in it)."""
        if self._error is not None:
            raise self._error
        if type(data) is not bytes:
            data = bytes(data)  # our memoryviews must not see the caller reuse a buffer
        out: list[Buffer] = []
        whole = memoryview(data) if self._views else data
        pos, end = 0, len(data)
        while pos < end:
            if self._missing:
                pos = self._continue_payload(data, pos, out)
                continue
            byte = data[pos]
            pos += 1
            self._length |= (byte & 0x7F) << self._shift
            self._shift += 7
            if self._length > self._limit or (byte & 0x80 and self._shift >= self._max_shift):
                self._error = ProtocolError(f"message larger than {self._limit} bytes")
                raise self._error
            if byte & 0x80:
                continue
            length, self._length, self._shift = self._length, 0, 0
            if end - pos >= length:
                if length:
                    out.append(whole[pos : pos + length])
                pos += length
            else:
                self._missing = length
        return out

    def _continue_payload(self, data: bytes, pos: int, out: list[Buffer]) -> int:
        """Take what `data` has of the current payload; emit it if that completes it."""
        take = min(self._missing, len(data) - pos)
        self._parts.append(memoryview(data)[pos : pos + take])
        self._missing -= take
        if not self._missing:
            out.append(b"".join(self._parts))
            self._parts.clear()
        return pos + take
