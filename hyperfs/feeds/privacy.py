"""Which feeds must never travel in plaintext, and the one rule that says so.

A feed is *private* when it was made with ``hyperfs add --private`` or written into a
mount started with ``--private``. A private feed is only ever joined inside an encrypted
connection (between hyperfs peers): never on a hypercore 1.x connection, where its id
and blocks would be readable by anyone on the path, and no matter what the handshake
says (an attacker can strip the encryption offer from both sides: only this rule,
failing closed, protects the feed then).

The marks are a file of their own, ``<db>/private`` (one hex id per line, mode 0600,
appended and fsynced before the feed's id is given out), not LevelDB records: the rule
reads a set in memory, and the file is as secret as the ids it lists. A crash between a
feed's finalize and its mark leaves it public, but its id was never printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hyperfs.feeds.feed import Feed

__all__ = ["PRIVATE_FILE", "PrivateFeeds", "may_travel_plaintext"]

PRIVATE_FILE = "private"


class PrivateFeeds:
    """The set of private feed ids of one database, kept in ``<db>/private``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / PRIVATE_FILE
        self._ids: set[bytes] = set()
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            text = ""
        for line in text.split():
            if len(line) == 64:  # else a torn last line: its id was never given out
                self._ids.add(bytes.fromhex(line))
        self._torn = bool(text) and not text.endswith("\n")
        self.new_feeds = False
        """Whether feeds finalized from now on are private (``--private``)."""

    def __contains__(self, feed_id: object) -> bool:
        return feed_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def mark(self, feed_id: bytes) -> None:
        """Make ``feed_id`` private, durably, before anyone can be told the id."""
        if feed_id in self._ids:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, b"\n" * self._torn + feed_id.hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        self._torn = False
        self._ids.add(bytes(feed_id))


def may_travel_plaintext(feed: Feed, private: PrivateFeeds) -> bool:
    """Whether ``feed`` may be joined on a plaintext (hypercore 1.x) connection.

    The single place of this rule: every join on a connection that is not encrypted
    asks it (``hyperfs.replication.swarm``). A live feed never is: its updates are
    signed, but its id and data must stay as private as a private feed's.
    """
    return not feed.live and feed.id not in private
