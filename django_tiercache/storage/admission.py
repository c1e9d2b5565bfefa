"""W-TinyLFU: which entries an L1 tier keeps when it is full.

Plain LRU lets one pass over many cold keys (a report, a crawler) push out
every hot key. W-TinyLFU, the policy of Java's Caffeine, keeps an
approximate count of how often each key was asked for (a count-min sketch,
halved every so often so that old popularity fades) and admits a new key
into the main area only if it has been asked for more often than the key it
would push out. A small LRU *window* in front gives new keys a chance to
build a count; the main area is a segmented LRU (*probation* for keys seen
once there, *protected* for keys hit again).

cachetools offers LRU and LFU caches but no admission step with a victim to
compare against, so the structure is written here, on OrderedDicts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

WINDOW_SHARE = 0.01  # of the entries, at least one
PROTECTED_SHARE = 0.8  # of the main area
MAX_COUNT = 15  # a sketch counter saturates here (4 bits in Caffeine)


class FrequencySketch:
    """Approximate, aging counts of how often keys were seen (count-min, 4 rows)."""

    def __init__(self, capacity: int):
        width = 1 << max(4, (max(capacity, 1) * 2 - 1).bit_length())
        self._mask = width - 1
        self._rows = [[0] * width for _ in range(4)]
        self._additions = 0
        self._reset_at = 10 * max(capacity, 1)

    # The four row indexes are spelt out rather than generated: add() runs on
    # every L1 hit, and a generator per call costs more than the counting.

    def add(self, key: Hashable) -> None:
        h = hash(key) & 0xFFFFFFFFFFFFFFFF
        step, mask = (h >> 32) | 1, self._mask
        r0, r1, r2, r3 = self._rows
        i0, i1, i2, i3 = h & mask, (h + step) & mask, (h + 2 * step) & mask, (h + 3 * step) & mask
        added = False
        if r0[i0] < MAX_COUNT:
            r0[i0] += 1
            added = True
        if r1[i1] < MAX_COUNT:
            r1[i1] += 1
            added = True
        if r2[i2] < MAX_COUNT:
            r2[i2] += 1
            added = True
        if r3[i3] < MAX_COUNT:
            r3[i3] += 1
            added = True
        if added:
            self._additions += 1
            if self._additions >= self._reset_at:
                self._age()

    def count(self, key: Hashable) -> int:
        h = hash(key) & 0xFFFFFFFFFFFFFFFF
        step, mask = (h >> 32) | 1, self._mask
        r0, r1, r2, r3 = self._rows
        return min(
            r0[h & mask],
            r1[(h + step) & mask],
            r2[(h + 2 * step) & mask],
            r3[(h + 3 * step) & mask],
        )

    def _age(self) -> None:
        # Halving every counter lets yesterday's favourites make room.
        for row in self._rows:
            row[:] = [c >> 1 for c in row]
        self._additions //= 2


class WTinyLFU:
    """A bounded mapping key -> (value, size) that evicts by W-TinyLFU.

    Bounded by the number of entries and the sum of their sizes. Not
    thread-safe: the L1 tier calls it under its own lock.
    """

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.window_size = max(1, int(max_entries * WINDOW_SHARE))
        main = max(1, max_entries - self.window_size)
        self.protected_size = int(main * PROTECTED_SHARE)
        self.sketch = FrequencySketch(max_entries)
        self.window: OrderedDict[Hashable, Any] = OrderedDict()
        self.probation: OrderedDict[Hashable, Any] = OrderedDict()
        self.protected: OrderedDict[Hashable, Any] = OrderedDict()
        self.bytes = 0
        self.sizes: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self.sizes)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.sizes

    def get(self, key: Hashable) -> Any:
        """The value, or None; counts the access."""
        self.sketch.add(key)
        value = self.window.get(key)
        if value is not None:
            self.window.move_to_end(key)
            return value
        value = self.protected.get(key)
        if value is not None:
            self.protected.move_to_end(key)
            return value
        value = self.probation.pop(key, None)
        if value is not None:  # hit again: promote, demoting the coldest protected key
            self.protected[key] = value
            if len(self.protected) > self.protected_size:
                old, old_value = self.protected.popitem(last=False)
                self.probation[old] = old_value
        return value

    def put(self, key: Hashable, value: Any, size: int) -> list[tuple[Hashable, Any]]:
        """Store value; return the (key, value) pairs evicted (perhaps this one,
        not admitted). The key must not be present (pop it first)."""
        self.sketch.add(key)
        if size > self.max_bytes:
            return [(key, value)]
        self.window[key] = value
        self.sizes[key] = size
        self.bytes += size
        evicted: list[tuple[Hashable, Any]] = []
        while len(self.window) > self.window_size:
            self._admit(self.window.popitem(last=False), evicted)
        while self.bytes > self.max_bytes:
            evicted.append(self._evict_any())
        return evicted

    def _admit(self, candidate: tuple[Hashable, Any], evicted: list) -> None:
        key, value = candidate
        if len(self.probation) + len(self.protected) < self.max_entries - self.window_size:
            self.probation[key] = value
            return
        area = self.probation or self.protected
        victim = next(iter(area))
        if self.sketch.count(key) > self.sketch.count(victim):
            evicted.append((victim, area.pop(victim)))
            self._forget(victim)
            self.probation[key] = value
        else:
            self._forget(key)
            evicted.append((key, value))

    def _evict_any(self) -> tuple[Hashable, Any]:
        for area in (self.probation, self.window, self.protected):
            if area:
                key, value = area.popitem(last=False)
                self._forget(key)
                return key, value
        raise AssertionError("bytes counted for no entry")

    def _forget(self, key: Hashable) -> None:
        self.bytes -= self.sizes.pop(key)

    def peek(self, key: Hashable) -> Any:
        """The value, or None, without counting an access."""
        if key not in self.sizes:
            return None
        for area in (self.window, self.probation, self.protected):
            value = area.get(key)
            if value is not None:
                return value
        return None

    def pop(self, key: Hashable) -> Any:
        """Remove key; return its value or None."""
        if key not in self.sizes:
            return None
        self._forget(key)
        for area in (self.window, self.probation, self.protected):
            value = area.pop(key, None)
            if value is not None:
                return value
        return None

    def clear(self) -> None:
        for area in (self.window, self.probation, self.protected):
            area.clear()
        self.sizes.clear()
        self.bytes = 0
