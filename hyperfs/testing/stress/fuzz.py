"""Fuzzing (hypothesis) of the frame decoder and the channel state machine: only
ProtocolError ever escapes, the result does not depend on chunking, state stays bounded."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from hyperfs.testing.stress.common import Config, Result
from hyperfs.wire.connection import Connection, ProtocolError
from hyperfs.wire.framing import FrameDecoder, frame
from hyperfs.wire.messages import (
    Cancel,
    Have,
    Join,
    Leave,
    Pause,
    Request,
    Response,
    Unpause,
    encode,
)
from hyperfs.wire.protobuf import Buffer


def check_state(conn: Connection) -> None:
    """The channel table stays bounded and consistent."""
    remote, opened = conn.remote_channels()
    assert len(remote) <= 16
    assert len(set(remote.values())) == len(remote)  # one channel per feed
    assert all(conn.joined_remotely(feed_id) for feed_id in remote.values())
    assert all(ch < opened for ch in remote)


def decoder_property(budget: Any, counts: dict[str, int]) -> Callable[[], None]:
    """Arbitrary bytes in arbitrary chunks through FrameDecoder and receive_data."""

    @budget
    @given(st.binary(max_size=2048), st.lists(st.integers(1, 64), max_size=20))
    def decoder(data: bytes, cuts: list[int]) -> None:
        counts["decoder"] += 1
        # Same payloads whatever the chunking; only ProtocolError ever escapes.
        def split(decoder: FrameDecoder, chunks: list[bytes]) -> tuple[list[Buffer], bool]:
            out: list[Buffer] = []
            try:
                for chunk in chunks:
                    out.extend(decoder.feed(chunk))
            except ProtocolError:
                return out, True
            return out, False
        chunks, pos = [], 0
        for cut in cuts:
            chunks.append(data[pos:pos + cut])
            pos += cut
        chunks.append(data[pos:])
        whole = split(FrameDecoder(1024), [data])
        chunked = split(FrameDecoder(1024, views=True), chunks)  # views: the same payloads
        assert chunked[1] == whole[1], "an error depends on the chunking"
        # a failing feed() loses its own chunk's payloads, so compare only clean runs
        assert whole[1] or chunked[0] == whole[0], "payloads depend on the chunking"
        target(float(len(whole[0])), label="frames decoded")
        conn = Connection(os.urandom(32), max_channels=16)
        events = 0
        with contextlib.suppress(ProtocolError):
            events = len(conn.receive_data(Connection(os.urandom(32)).start() + data))
        target(float(events), label="events")
        check_state(conn)

    return decoder


def machine_property(budget: Any, counts: dict[str, int]) -> Callable[[], None]:
    """Random messages and local join/leave through one Connection's channel machine."""
    ids = [bytes([n]) * 32 for n in range(4)]
    channel = st.integers(0, 20)
    message = st.one_of(
        st.builds(Join, channel, st.sampled_from(ids)),
        st.builds(Leave, channel),
        st.builds(Have, channel, st.lists(st.integers(0, 1 << 20), max_size=3).map(tuple),
                  st.one_of(st.none(), st.binary(max_size=64))),
        st.builds(Pause, channel), st.builds(Unpause, channel),
        st.builds(Request, channel, st.integers(0, 1 << 40)),
        st.builds(Cancel, channel, st.integers(0, 100)),
        st.builds(Response, channel, st.integers(0, 100), st.binary(max_size=64),
                  st.just(())),
    )
    local_op = st.tuples(st.sampled_from(["join", "leave"]), st.sampled_from(ids))

    @budget
    @given(st.lists(st.one_of(message, local_op), max_size=60))
    def machine(steps: list[Any]) -> None:
        counts["machine"] += 1
        conn = Connection(os.urandom(32), max_channels=16)
        conn.start()
        conn.receive_data(Connection(os.urandom(32)).start())
        delivered = 0
        for step in steps:
            if isinstance(step, tuple):
                op, fid = step
                conn.join(fid) if op == "join" else conn.leave(fid)
                continue
            try:
                delivered += len(conn.receive_data(frame(encode(step))))
            except ProtocolError:
                try:  # dead for good after an error
                    conn.receive_data(b"")
                except ProtocolError:
                    break
                raise AssertionError("a connection that failed accepted more") from None
            check_state(conn)
        target(float(delivered), label="events delivered")

    return machine


def fuzz(cfg: Config) -> list[Result]:
    """Hypothesis (property-based; ``target`` steers it to inputs that get further)
    over the frame decoder and the channel state machine of :class:`Connection`."""
    budget = settings(max_examples=cfg.fuzz_examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
    counts = {"decoder": 0, "machine": 0}
    failures: dict[str, list[str]] = {"decoder": [], "machine": []}
    results = []
    for name, prop in (("decoder", decoder_property(budget, counts)),
                       ("machine", machine_property(budget, counts))):
        t0 = time.monotonic()
        try:
            prop()
        except Exception as exc:  # a counterexample: the case did not hold
            failures[name].append(f"{type(exc).__name__}: {exc}"[:500])
        seconds = time.monotonic() - t0
        what = ("frame decoder + Connection.receive_data on arbitrary bytes in arbitrary "
                "chunks" if name == "decoder" else
                "channel state machine: random Join/Leave/Have/Request/... and local "
                "join/leave")
        results.append(Result(f"fuzz (hypothesis): {what}", counts[name],
                               counts[name] if not failures[name] else 0,
                               f"{counts[name]:,} inputs in {seconds:.1f} s: only "
                               "ProtocolError, chunking-independent, state bounded",
                               failures[name]))
    return results


async def case_fuzz(cfg: Config, work: Path) -> list[Result]:
    return await trio.to_thread.run_sync(fuzz, cfg)


