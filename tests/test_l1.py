"""The L1 tier: copies in each process, coherent across real OS processes."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

from django_tiercache.storage.l1 import MISS as MISS_OF_L1
from tests import l1_gate
from tests.redis_servers import SHARED_REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
# MAX_LAG well above any scheduling delay of a loaded CI machine: these tests are about
# what the messages do; the lag bound has tests of its own, with a small one.
L1 = {"MAX_ENTRIES": 1000, "MAX_BYTES": 2**20, "TIMEOUT": 30, "MAX_LAG": 10}
TAG = "shop.product:7"


class Worker:
    """A TierCache in another OS process (tests/l1_worker.py)."""

    def __init__(self, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.l1_worker"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )

    def __call__(self, op, *args):
        self.send(op, *args)
        return self.receive(op)

    def send(self, op, *args):
        self.proc.stdin.write(json.dumps([op, *args]) + "\n")
        self.proc.stdin.flush()

    def receive(self, op=""):
        line = self.proc.stdout.readline()
        assert line, f"worker died during {op}"
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def workers():
    started = []

    def start(location, prefix, options):
        worker = Worker()
        started.append(worker)
        worker("build", location, prefix, options)
        assert worker("live"), "the worker's L1 channel never came up"
        return worker

    yield start
    for worker in started:
        worker.close()


@pytest.fixture
def prefix():
    return f"l1{uuid.uuid4().hex[:10]}"


def wait_live(cache):
    cache.get("warm-up")  # the first miss subscribes
    deadline = time.monotonic() + 10
    while not all(s.live for s in cache._l1.slots):
        assert time.monotonic() < deadline, "L1 channel never came up"
        time.sleep(0.005)


_markers = itertools.count()


def announce_marker(url, prefix) -> str:
    """Publish a change to a marker key after a change: messages on a channel
    arrive in order, so a reader that heard the marker heard the change too.

    Each call announces a marker of its own (returned): a reader's log still
    holds the earlier ones, and waiting for one of those would wait for nothing."""
    marker = f"marker{next(_markers)}"
    announced = "k" + json.dumps([f"{prefix}:1:{marker}"])
    redis.Redis.from_url(url).publish(f"{prefix}:_tc:l1", announced)
    return marker


def heard(cache, key):
    made = cache.make_key(key)
    slot = cache._l1.slots[cache._slot_of[cache._partition(made)]]
    with cache._l1.lock:
        return any(kind == "k" and made in items for _, kind, items in slot.log)


def settle(url, prefix, heard_marker):
    """Wait until every message already sent on the channel was heard (a marker
    sent after them arrives after them): a late one, such as the "start over"
    a namespace's first greeting announces, would flush a copy kept meanwhile.
    heard_marker(marker) says whether that marker was heard."""
    marker = announce_marker(url, prefix)
    deadline = time.monotonic() + 10
    while not heard_marker(marker):
        assert time.monotonic() < deadline, "the marker never arrived"
        time.sleep(0.005)


def read_into_l1(cache, key):
    """get() until L1 keeps a copy: a fill is dropped while the message of the
    write that made the value may still be on its way (it could be a newer change)."""
    settle(SHARED_REDIS_URL, cache.key_prefix, lambda marker: heard(cache, marker))
    deadline = time.monotonic() + 10
    while True:
        value = cache.get(key)
        if cache.make_key(key) in cache._l1.entries:
            return value
        assert time.monotonic() < deadline, "never kept in L1"
        time.sleep(0.005)


@pytest.fixture
def l1_cache(make_cache, prefix):
    cache = make_cache(SHARED_REDIS_URL, KEY_PREFIX=prefix, L1=L1)
    wait_live(cache)
    return cache


# -- in one process --


def test_l1__serves_its_copy_without_asking_redis(l1_cache, prefix):
    l1_cache.set("k", {"a": 1})
    assert read_into_l1(l1_cache, "k") == {"a": 1}
    # Deleted behind the cache's back (no message): only L1 can still answer.
    redis.Redis.from_url(SHARED_REDIS_URL).delete(l1_cache.make_key("k"))
    assert l1_cache.get("k") == {"a": 1}


def test_l1_hit__returns_a_value_of_its_own(l1_cache):
    l1_cache.set("k", {"items": [1, 2]})
    read_into_l1(l1_cache, "k")
    first = l1_cache.get("k")
    first["items"].append(3)
    second = l1_cache.get("k")
    second["items"].append(4)
    assert l1_cache.get("k") == {"items": [1, 2]}
    assert l1_cache.make_key("k") in l1_cache._l1.entries


def test_l1_hits__are_counted_as_their_own_tier(l1_cache):
    from django_tiercache.stats.collection import recorder_of

    l1_cache.set("k", "v")
    read_into_l1(l1_cache, "k")
    before = recorder_of(l1_cache)._counts().get(("hit", "l1"), 0)
    l1_cache.get("k")
    assert recorder_of(l1_cache)._counts().get(("hit", "l1")) == before + 1


@pytest.mark.parametrize("change", ["set", "delete", "invalidate", "incr", "touch", "clear"])
def test_own_change__is_seen_at_once(l1_cache, change):
    l1_cache.set("k", 1, tags=[TAG])
    assert read_into_l1(l1_cache, "k") == 1
    if change == "set":
        l1_cache.set("k", 2)
    elif change == "delete":
        l1_cache.delete("k")
    elif change == "invalidate":
        l1_cache.invalidate_tags(TAG)
    elif change == "incr":
        l1_cache.incr("k")
    elif change == "touch":
        l1_cache.touch("k", 0)
    else:
        l1_cache.clear()
    assert l1_cache.get("k") in ({"set": 2, "incr": 2}.get(change),)


def test_lock_tags__hides_the_copy_at_once(l1_cache):
    l1_cache.set("k", "v", tags=[TAG])
    assert read_into_l1(l1_cache, "k") == "v"
    l1_cache.lock_tags("writer-1", [TAG], 5)
    assert l1_cache.get("k") is None
    l1_cache.unlock_tags("writer-1", [TAG])


def test_copy__never_outlives_its_redis_timeout(l1_cache):
    l1_cache.set("k", "v", timeout=0.5)
    assert read_into_l1(l1_cache, "k") == "v"
    time.sleep(0.6)
    assert l1_cache.get("k") is None


def test_lost_channel__flushes_and_bypasses_l1_until_back(l1_cache):
    l1 = l1_cache._l1
    l1_cache.set("k", "v")
    read_into_l1(l1_cache, "k")
    made = l1_cache.make_key("k")
    l1.lost(0)
    assert made not in l1.entries
    assert l1_cache.get("k") == "v"  # from Redis ...
    assert made not in l1.entries  # ... and not kept while the channel is down
    l1.connected(0)
    assert read_into_l1(l1_cache, "k") == "v"


def test_l1_option__is_validated(make_cache):
    with pytest.raises(ImproperlyConfigured, match=r"tiercache\.E003.*L1.*MAX_ENTRIES"):
        make_cache(SHARED_REDIS_URL, L1={"MAX_ENTRIES": 0}).get("k")
    with pytest.raises(ImproperlyConfigured, match=r"tiercache\.E003.*L1"):
        make_cache(SHARED_REDIS_URL, L1={"SIZE": 10}).get("k")
    with pytest.raises(ImproperlyConfigured, match=r"tiercache\.E003.*L1"):
        make_cache(SHARED_REDIS_URL, L1="yes").get("k")
    for lag in (0, -1, "1", True):
        with pytest.raises(ImproperlyConfigured, match=r"tiercache\.E003.*MAX_LAG.*None"):
            make_cache(SHARED_REDIS_URL, L1={"MAX_LAG": lag}).get("k")
    assert make_cache(SHARED_REDIS_URL, L1={"MAX_LAG": None})._l1.max_lag is None
    assert make_cache(SHARED_REDIS_URL, L1={"MAX_LAG": 0.25})._l1.max_lag == 0.25


def _subscriber_of(cache):
    from django_tiercache.storage.coherence import subscribers

    (partition,) = cache._partitions
    return next(s for s in subscribers() if s.channel == partition.store.channel)


def _wait_for_ping(subscriber):
    """Until the subscriber has had a ping answered since now."""
    since, deadline = time.monotonic(), time.monotonic() + 10
    while subscriber.heard_until < since:
        assert time.monotonic() < deadline, "no ping answered"
        time.sleep(0.01)


def _behind(cache, key, value):
    """Make the cache's subscriber fall behind (its thread blocks on its lock at
    the next ping reply), with a copy of key in L1 and key deleted from Redis
    behind L1's back: get() now answers `value` from L1, None from Redis."""
    cache.set(key, value)
    assert read_into_l1(cache, key) == value
    subscriber = _subscriber_of(cache)
    subscriber.lock.acquire()
    redis.Redis.from_url(SHARED_REDIS_URL).delete(cache.make_key(key))
    return subscriber


def test_a_subscriber_behind_by_more_than_max_lag__l1_is_bypassed_until_it_catches_up(
    make_cache, prefix, caplog
):
    cache = make_cache(SHARED_REDIS_URL, KEY_PREFIX=prefix, L1={**L1, "MAX_LAG": 0.2})
    wait_live(cache)
    subscriber = _behind(cache, "k", "v")
    try:
        deadline = time.monotonic() + 10
        while cache.get("k") == "v":  # served from L1 while the proof is recent ...
            assert time.monotonic() < deadline, "L1 went on serving a subscriber that fell behind"
            time.sleep(0.01)
        # (The thread is held with a ping's reply in hand, which settled() sees
        # first; held past MAX_LAG, it is behind by that too, and says so after.)
        time.sleep(0.3)
        assert cache.get("k") is None  # ... then from Redis
        assert cache.make_key("k") in cache._l1.entries  # the copy is kept meanwhile
    finally:
        subscriber.lock.release()
    deadline = time.monotonic() + 10
    while cache.get("k") is None:  # caught up: the kept copy is served again
        assert time.monotonic() < deadline, "L1 never served again after catching up"
        time.sleep(0.01)
    assert cache.get("k") == "v"
    # ... and the cache counted it (statistics, Prometheus) and said it.
    (partition,) = cache._partitions
    assert cache._policy.counts[("l1_behind", partition.name)] >= 1
    said = [r.getMessage() for r in caplog.records]
    assert any(f"L1 copies of partition {partition.name}" in m for m in said), said


def test_a_copy_whose_slot_was_last_proven_more_than_max_lag_ago__is_kept_not_served():
    """MAX_LAG on its own, with nothing pending on the channel: the in-process
    tier alone (no subscriber; its slot is told what a subscriber would tell it)."""
    from django_tiercache.storage.l1 import L1 as Tier

    tier = Tier(1, 100, 2**20, 30, loads=None, max_lag=1.0)
    tier.connected(0, since=time.monotonic())
    assert tier.fill("k", 0, tier.ticket(0), "v", None, (), time.monotonic() + 30)
    assert tier.get("k") == "v"
    tier.slots[0].heard = time.monotonic() - 2  # the last proof is 2 s old
    assert tier.get("k") is MISS_OF_L1
    assert "k" in tier.entries
    tier.heard(0, time.monotonic())
    assert tier.get("k") == "v"


def test_with_no_lag_bound__l1_serves_however_far_behind_its_subscriber_is(make_cache, prefix):
    """What MAX_LAG changes: without it, a copy is served while the subscriber is stuck."""
    cache = make_cache(SHARED_REDIS_URL, KEY_PREFIX=prefix, L1={**L1, "MAX_LAG": None})
    wait_live(cache)
    subscriber = _behind(cache, "k", "v")
    try:
        time.sleep(1.5)  # several pings unanswered (no timing is asserted)
        assert cache.get("k") == "v"
    finally:
        subscriber.lock.release()
    _wait_for_ping(subscriber)
    assert not any(event == "l1_behind" for event, _ in cache._policy.counts)  # nothing refused


def test_memory_partitions__behave_the_same_with_l1_on(make_cache):
    cache = make_cache(f"memory://l1-{uuid.uuid4().hex}", L1=True)
    assert cache._l1 is None
    cache.set("k", "v", tags=[TAG])
    cache.invalidate_tags(TAG)
    assert cache.get("k") is None


# -- across processes --

CHANGES = ["set", "delete", "invalidate", "lock", "incr", "touch", "clear"]
# What "k" (1, tagged TAG) reads as after each change; a lock is released by the test.
AFTER_CHANGE = {"set": 2, "incr": 2}


def make_change(writer, change: str) -> None:
    """One of CHANGES to "k", made through `writer`."""
    if change == "set":
        writer.set("k", 2)
    elif change == "delete":
        writer.delete("k")
    elif change == "invalidate":
        writer.invalidate_tags(TAG)
    elif change == "lock":
        writer.lock_tags("writer-1", [TAG], 5)
    elif change == "incr":
        writer.incr("k")
    elif change == "touch":
        writer.touch("k", 0)
    else:
        writer.clear()


@pytest.mark.parametrize("change", CHANGES)
def test_change_in_another_process__is_not_served_once_heard(workers, make_cache, prefix, change):
    writer = make_cache(SHARED_REDIS_URL, KEY_PREFIX=prefix)
    reader = workers(SHARED_REDIS_URL, prefix, {"L1": L1})
    writer.set("k", 1, tags=[TAG])
    assert reader("get", "k") == 1
    assert reader("in_l1", "k")
    make_change(writer, change)
    assert reader("wait_heard", announce_marker(SHARED_REDIS_URL, prefix))
    assert reader("get", "k") == AFTER_CHANGE.get(change)
    if change == "lock":
        writer.unlock_tags("writer-1", [TAG])


def test_a_fill_made_after_a_lock_lapsed__is_dropped_from_other_l1s_by_the_unlock(
    workers, make_cache, prefix
):
    """The lock lapsed before its transaction ended: a reader filled the entry from
    what it read then (it may predate the commit) and kept a copy. The unlock, sent
    after the commit, must reach that copy: a lock that did not hold to the end
    is announced again (tests/test_announcements.py: which unlocks are not)."""
    writer = make_cache(SHARED_REDIS_URL, KEY_PREFIX=prefix)
    reader = workers(SHARED_REDIS_URL, prefix, {"L1": L1})
    writer.lock_tags("writer-1", [TAG], 0.05)
    time.sleep(0.1)
    assert reader("get_or_set", "k", "read before the commit", [TAG]) == "read before the commit"
    assert reader("in_l1", "k")
    assert reader("get", "k") == "read before the commit"  # served from its copy
    writer.unlock_tags("writer-1", [TAG])
    assert reader("wait_heard", announce_marker(SHARED_REDIS_URL, prefix))
    assert not reader("in_l1_now", "k")
    assert reader("get", "k") is None


def test_fill_racing_an_invalidation__is_dropped(workers, l1_cache, prefix):
    """Read before another process invalidates, filled after the message arrived:
    the copy must not be kept (the ticket taken before the read sees the change)."""
    from tests.l1_gate import Gate

    l1_cache.set("k", Gate("old"), tags=[TAG])
    invalidator = workers(SHARED_REDIS_URL, prefix, {"L1": L1})
    l1_gate.entered.clear()
    l1_gate.release.clear()
    l1_gate.armed.set()
    got = []
    reader = threading.Thread(target=lambda: got.append(l1_cache.get("k")))
    reader.start()
    try:
        assert l1_gate.entered.wait(10)  # Redis answered "old"; not yet in L1
        invalidator("invalidate", TAG)
        marker = announce_marker(SHARED_REDIS_URL, prefix)
        deadline = time.monotonic() + 10
        while not heard(l1_cache, marker):
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        l1_gate.release.set()
        reader.join(10)
    assert got[0].label == "old"  # the read itself predates the invalidation
    assert l1_cache.make_key("k") not in l1_cache._l1.entries
    assert l1_cache.get("k") is None


def _written_and_sent(writer, url):
    """A round trip after the write: Redis sends a call's announcement to the
    subscribers just after its reply, in the same turn of its event loop, so a
    later reply proves the announcement has reached every socket on this host."""
    redis.Redis.from_url(url).ping()


@pytest.mark.parametrize("change", ["set", "invalidate", "lock"])
def test_change_that_reached_a_busy_process__is_not_served_before_its_thread_applies_it(
    workers, make_cache, prefix, tmp_path, change
):
    """The load benchmark's stale reads: a request thread that keeps the GIL must
    not be served a copy whose invalidation already sits on its subscriber's socket."""
    writer = make_cache(SHARED_REDIS_URL, KEY_PREFIX=prefix)
    reader = workers(SHARED_REDIS_URL, prefix, {"L1": L1})
    writer.set("k", 1, tags=[TAG])
    settle(SHARED_REDIS_URL, prefix, lambda marker: reader("wait_heard", marker))
    assert reader("in_l1", "k")
    flags = tmp_path / "flags"
    flags.write_bytes(bytes(2))
    reader.send("get_when_flagged", "k", str(flags))
    deadline = time.monotonic() + 10
    while flags.read_bytes()[1] == 0:  # the reader holds the GIL from here on
        assert time.monotonic() < deadline, "the reader never started waiting"
        time.sleep(0.005)
    make_change(writer, change)
    _written_and_sent(writer, SHARED_REDIS_URL)
    with flags.open("r+b") as f:
        f.write(b"\x01")
    assert reader.receive("get_when_flagged") == AFTER_CHANGE.get(change)
    if change == "lock":
        writer.unlock_tags("writer-1", [TAG])


def test_change_read_off_the_socket_but_not_applied__is_not_served(make_cache, prefix):
    """The subscriber took the message off its socket and is held before it applies
    it: the copy is not served meanwhile (nor the one read back once it is applied)."""
    cache = make_cache(SHARED_REDIS_URL, KEY_PREFIX=prefix, L1=L1)
    writer = make_cache(SHARED_REDIS_URL, KEY_PREFIX=prefix)
    wait_live(cache)
    writer.set("k", "v")
    assert read_into_l1(cache, "k") == "v"
    subscriber = _subscriber_of(cache)
    subscriber.lock.acquire()  # _dispatch() waits for it, the message in hand
    try:
        writer.set("k", "v2")
        _written_and_sent(writer, SHARED_REDIS_URL)
        deadline = time.monotonic() + 10
        while _socket_holds_bytes(subscriber):
            assert time.monotonic() < deadline, "the subscriber never read the message"
            time.sleep(0.005)
        assert cache.make_key("k") in cache._l1.entries  # the copy is still there ...
        assert cache.get("k") == "v2"  # ... and not served
    finally:
        subscriber.lock.release()


def test_a_message_pending_for_another_key__the_copy_is_served_once_the_subscriber_applies_it(
    make_cache, prefix, monkeypatch
):
    """A hit that finds its subscriber holding a message not yet applied waits for
    it (coherence.CATCH_UP, long here) instead of reading Redis, and serves its copy
    when the message turns out to concern another key."""
    from django_tiercache.storage import coherence

    monkeypatch.setattr(coherence, "CATCH_UP", 5.0, raising=False)
    cache = make_cache(SHARED_REDIS_URL, KEY_PREFIX=prefix, L1=L1)
    wait_live(cache)
    cache.set("k", "v")
    assert read_into_l1(cache, "k") == "v"
    # Deleted behind the cache's back (no message): Redis would answer None.
    redis.Redis.from_url(SHARED_REDIS_URL).delete(cache.make_key("k"))
    subscriber = _subscriber_of(cache)
    subscriber.lock.acquire()  # _dispatch() waits for it, the marker's message in hand
    try:
        announce_marker(SHARED_REDIS_URL, prefix)
        deadline = time.monotonic() + 10
        while _socket_holds_bytes(subscriber):
            assert time.monotonic() < deadline, "the subscriber never read the message"
            time.sleep(0.005)
        assert not subscriber.settled()
    except BaseException:
        subscriber.lock.release()
        raise
    releaser = threading.Timer(0.2, subscriber.lock.release)  # applied while get() waits
    releaser.start()
    try:
        assert cache.get("k") == "v"  # served from L1 once the marker was applied
    finally:
        releaser.join()


def _socket_holds_bytes(subscriber) -> bool:
    import fcntl
    import termios

    fd = subscriber.client.connection._sock.fileno()
    return fcntl.ioctl(fd, termios.FIONREAD, bytes(4)) != bytes(4)


def test_killed_channel__flushes_the_other_process_l1(workers, make_cache, prefix, redis_servers):
    server = redis_servers[0]
    server.ensure_clean()
    writer = make_cache(server.url, KEY_PREFIX=prefix)
    reader = workers(server.url, prefix, {"L1": L1})
    writer.set("k", "v")
    assert reader("live")  # subscribed: what it reads from now on, L1 may keep
    settle(server.url, prefix, lambda marker: reader("wait_heard", marker))
    assert reader("in_l1", "k")  # once the set's own message has been heard
    raw = server.client()
    raw.delete(writer.make_key("k"))  # behind L1's back: no message
    assert reader("get", "k") == "v"  # served by L1
    raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    assert reader("wait_gone", "k")
    assert reader("get", "k") is None
    assert reader("live")  # and it subscribes again


def test_channel_down_in_another_process__l1_is_bypassed_until_resubscribed(
    workers, make_cache, prefix, redis_servers
):
    server = redis_servers[0]
    server.ensure_clean()
    writer = make_cache(server.url, KEY_PREFIX=prefix)
    reader = workers(server.url, prefix, {"L1": L1})
    writer.set("k", "v1")
    # Every message already sent heard: a late one (a "start over") would drop
    # the copy as the lost channel does, and wait_gone would not wait for that.
    settle(server.url, prefix, lambda marker: reader("wait_heard", marker))
    assert reader("in_l1", "k")
    raw = server.client()
    # Kill its subscription and keep it from subscribing again (the server
    # refuses SUBSCRIBE), so that the channel stays down while we look.
    raw.execute_command("ACL", "SETUSER", "default", "-subscribe")
    try:
        raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert reader("wait_gone", "k")
        assert not reader("is_live")
        assert reader("get", "k") == "v1"
        writer.set("k", "v2")  # announced on a channel the reader is not on
        assert reader("get", "k") == "v2"  # seen at once: L1 is bypassed ...
        assert not reader("in_l1_now", "k")  # ... and keeps no copy
        assert not reader("is_live")
    finally:
        raw.execute_command("ACL", "SETUSER", "default", "+subscribe")
    assert reader("live")  # it subscribes again by itself
    assert reader("in_l1", "k")
    raw.delete(writer.make_key("k"))  # behind L1's back: no message
    assert reader("get", "k") == "v2"  # L1 serves again


def test_evicted_tag_token__is_no_invalidation_and_a_later_one_still_reaches_l1(
    workers, make_cache, prefix
):
    """maxmemory eviction of a tag token's bucket sends no message (see the README, "L1":
    why that is not a stale read); what the argument rests on is that a real
    invalidation still announces itself when the token is already gone."""
    writer = make_cache(SHARED_REDIS_URL, KEY_PREFIX=prefix)
    reader = workers(SHARED_REDIS_URL, prefix, {"L1": L1})
    writer.set("k", 1, tags=[TAG])
    settle(SHARED_REDIS_URL, prefix, lambda marker: reader("wait_heard", marker))
    assert reader("in_l1", "k")
    raw = redis.Redis.from_url(SHARED_REDIS_URL)
    buckets = [b for b in raw.scan_iter(match=f"{prefix}:*s:*") if raw.hlen(b)]
    assert buckets  # the slot table's bucket holding the tag's token
    raw.delete(*buckets)  # what an eviction does: gone, without a message
    assert writer.get("k") is None  # Redis no longer vouches for the entry ...
    assert reader("get", "k") == 1  # ... the copy, made before any change, is still served
    writer.invalidate_tags(TAG)
    assert reader("wait_heard", announce_marker(SHARED_REDIS_URL, prefix))
    assert reader("get", "k") is None
