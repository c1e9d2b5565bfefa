"""Committed versions and per-worker counters in one shared-memory file, outside every cache.

Layout (int64 words): [0] the next free counter slot; [2 + pk] the highest version committed for
product pk (written after the write's transaction returned, so it never runs ahead of the database);
then SLOTS slots of len(FIELDS) counters, one slot per gunicorn worker process. A sync worker is one
thread, so each slot has one writer and needs no lock; the harness sums the slots.
"""

from __future__ import annotations

import fcntl
import mmap
import os

FIELDS = ("reads", "writes", "read_queries", "write_queries", "hits", "stale")
SLOTS = 256


def _size(products: int) -> int:
    return (_base(products) + SLOTS * len(FIELDS)) * 8


def _base(products: int) -> int:
    return 3 + products


def create(path: str, products: int) -> None:
    with open(path, "wb") as f:
        f.truncate(_size(products))


def _map(path: str, products: int):
    fd = os.open(path, os.O_RDWR)
    mm = mmap.mmap(fd, _size(products))
    return fd, mm, memoryview(mm).cast("q")


def totals(path: str, products: int) -> dict[str, int]:
    fd, mm, view = _map(path, products)
    try:
        base, out = _base(products), dict.fromkeys(FIELDS, 0)
        for slot in range(SLOTS):
            for i, name in enumerate(FIELDS):
                out[name] += view[base + slot * len(FIELDS) + i]
        return out
    finally:
        view.release()
        mm.close()
        os.close(fd)


class Shared:
    """This process's view of the file, opened on first use (after gunicorn forked the worker)."""

    def __init__(self, path: str, products: int) -> None:
        self.path, self.products = path, products
        self.pid = -1

    def _open(self) -> None:
        self.fd, self.mm, self.view = _map(self.path, self.products)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            slot = self.view[0]
            if slot >= SLOTS:
                raise RuntimeError("no counter slot left")
            self.view[0] = slot + 1
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.slot = _base(self.products) + slot * len(FIELDS)
        self.pid = os.getpid()

    def committed(self, pk: int) -> int:
        if self.pid != os.getpid():
            self._open()
        return self.view[2 + pk]

    def commit(self, pk: int, version: int) -> None:
        if self.pid != os.getpid():
            self._open()
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            if self.view[2 + pk] < version:
                self.view[2 + pk] = version
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def count(self, field: int, n: int = 1) -> None:
        if self.pid != os.getpid():
            self._open()
        self.view[self.slot + field] += n
