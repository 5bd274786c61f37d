"""A list of callbacks, the event-emitter idiom of the seed in its smallest form.

Every subscription returns the function that undoes it, and a callback may unsubscribe
(itself or another) while the list is being called.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Generic, ParamSpec

P = ParamSpec("P")


class Callbacks(Generic[P]):
    """Callables taking the same arguments, called in the order they were added."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[Callable[P, object]] = []

    def add(self, callback: Callable[P, object]) -> Callable[[], None]:
        """Subscribe ``callback``; returns the function that unsubscribes it (idempotent)."""
        self._items.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._items.remove(callback)

        return remove

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for callback in list(self._items):
            callback(*args, **kwargs)
