"""A value whose unpickling can be held: it forces a reader to stop between its
Redis read and its L1 fill (the fill/invalidate race test)."""

from __future__ import annotations

import threading

entered = threading.Event()
release = threading.Event()
armed = threading.Event()


class Gate:
    def __init__(self, label: str):
        self.label = label

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if armed.is_set():
            armed.clear()
            entered.set()
            release.wait(20)
