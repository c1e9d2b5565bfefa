"""W-TinyLFU (storage/admission.py): what the L1 tier keeps when it is full."""

from __future__ import annotations

from django_tiercache.storage.admission import MAX_COUNT, FrequencySketch, WTinyLFU


def test_sketch__counts_each_key_and_saturates():
    sketch = FrequencySketch(1000)
    for _ in range(3):
        sketch.add(7)
    assert sketch.count(7) == 3
    assert sketch.count(8) == 0  # int hashes are not randomized: no collision here
    for _ in range(100):
        sketch.add(9)
    assert sketch.count(9) == MAX_COUNT


def test_one_off_scan__does_not_push_out_the_hot_keys():
    entries = WTinyLFU(100, 10**9)
    hot = range(50)
    for key in hot:
        entries.put(key, f"v{key}", 1)
    for _ in range(5):
        for key in hot:
            assert entries.get(key) == f"v{key}"
    for key in range(1000, 3000):  # each seen once: a report, a crawler
        entries.put(key, "cold", 1)
    kept = sum(key in entries for key in hot)
    assert kept >= 45  # plain LRU would keep none of them
    assert len(entries) <= 100


def test_size__stays_within_its_byte_bound():
    entries = WTinyLFU(1000, 100)
    evicted = []
    for key in range(50):
        evicted += entries.put(key, "x", 10)
    assert entries.bytes <= 100
    assert len(entries) + len(evicted) == 50
    assert entries.put("huge", "x", 101) == [("huge", "x")]
