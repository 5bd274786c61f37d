"""What README's library table promises of the core beyond reading and writing feeds:
`core.list()` and the 'interested' / 'uninterested' events, on a real database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hyperfs import Core, open_core
from hyperfs.testing.network import make_blocks, store_feed


async def _listed(core: Core) -> list[bytes]:
    return [feed_id async for feed_id in core.list()]


async def test_list_names_every_stored_feed_in_id_order(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        assert await _listed(core) == []
        stored = [await store_feed(core, make_blocks(3 + n, seed=n)) for n in range(5)]
        wanted = bytes(range(32))
        core.hold(wanted).close()  # known by id only: recorded, 0 blocks
        writable = core.add()
        await writable.append(b"never finalized")  # no id yet: not listed
        assert await _listed(core) == sorted([*stored, wanted])
        await core.remove(stored[2])
        assert await _listed(core) == sorted([*stored[:2], *stored[3:], wanted])
    async with open_core(tmp_path) as again:
        assert await _listed(again) == sorted([*stored[:2], *stored[3:], wanted])


async def test_list_of_many_feeds(tmp_path: Path) -> None:
    """More than one batch of ids (it yields to other tasks every 1,024)."""
    async with open_core(tmp_path) as core:
        ids = sorted(bytes([n >> 8, n & 0xFF]) * 16 for n in range(2500))
        for feed_id in ids:
            core.hold(feed_id).close()
        assert await _listed(core) == ids


class Heard:
    """Every 'interested' / 'uninterested' event of a core, in order, with its id."""

    def __init__(self, core: Core) -> None:
        self.events: list[tuple[str, bytes]] = []
        self.unsubscribe = [core.on(name, lambda feed_id, name=name: self._on(name, feed_id))
                            for name in ("interested", "uninterested")]

    def _on(self, name: str, feed_id: bytes) -> None:
        self.events.append((name, feed_id))

    def take(self) -> list[tuple[str, bytes]]:
        """The events since the last take."""
        events, self.events = self.events, []
        return events


@contextmanager
def heard(tmp_path: Path) -> Iterator[tuple[Core, Heard]]:
    core = Core(tmp_path)
    try:
        yield core, Heard(core)
    finally:
        core.close()


FEED = bytes(range(32))
OTHER = bytes(range(1, 33))


def test_first_interested_open_and_last_release_each_say_so_once(tmp_path: Path) -> None:
    with heard(tmp_path) as (core, log):
        first = core.get(FEED)
        assert log.take() == [("interested", FEED)]
        again = core.get(FEED.hex())  # the same feed, by its hex id
        assert again is first and log.take() == []
        core.get(OTHER)
        assert log.take() == [("interested", OTHER)]  # each feed for itself
        again.close()
        assert log.take() == []  # one interested open is left
        first.close()
        assert log.take() == [("uninterested", FEED)]
        core.release(first)  # released more often than opened: nothing more
        assert log.take() == []
        with core.get(FEED):
            assert log.take() == [("interested", FEED)]  # interested again, once more
        assert log.take() == [("uninterested", FEED)]


def test_uninterested_opens_say_nothing(tmp_path: Path) -> None:
    """The swarm opens the feeds a peer names this way: no event, so no other peer is
    asked for them."""
    with heard(tmp_path) as (core, log):
        core.hold(FEED).close()
        assert log.take() == []
        quiet = core.hold(FEED)
        loud = core.get(FEED)
        assert loud is quiet.feed and log.take() == [("interested", FEED)]
        quiet.close()
        quiet.close()  # a handle closes once
        assert log.take() == [] and core.interesting() == [loud]
        loud.close()
        assert log.take() == [("uninterested", FEED)] and core.interesting() == []


def test_with_a_hold_leaves_the_interest_alone(tmp_path: Path) -> None:
    """Issue 9: `with core.get(x, interested=False)` used to release as interested. A
    hold is its own handle, so its `with` can only undo itself."""
    with heard(tmp_path) as (core, log):
        wanted = core.get(FEED)
        assert log.take() == [("interested", FEED)]
        with core.hold(FEED) as held:
            assert held is wanted
        assert log.take() == [] and core.interesting() == [wanted]
        wanted.close()
        assert log.take() == [("uninterested", FEED)]


def test_unsubscribe_and_unknown_events(tmp_path: Path) -> None:
    with heard(tmp_path) as (core, log):
        for unsubscribe in log.unsubscribe:
            unsubscribe()
        with core.get(FEED):
            pass
        assert log.take() == []
        with pytest.raises(ValueError, match="unknown event 'wanted'"):
            core.on("wanted", print)
