"""Tags: invalidation on every partition, lost metadata, snapshots, bad input."""

import os
import subprocess
import sys

import pytest
from asgiref.sync import async_to_sync

from django_tiercache.storage.stores.slots import BUCKETS, bucket_field, bucket_key, slot_of


def test_invalidate_tags__hides_entries_on_every_partition(any_cache):
    keys = [f"k{i}" for i in range(200)]
    any_cache.set_many({k: k for k in keys}, tags=["group"])
    any_cache.set("other", 1, tags=["elsewhere"])
    any_cache.set("plain", 2)
    assert len(any_cache.get_many(keys)) == 200
    any_cache.invalidate_tags("group")
    assert any_cache.get_many(keys) == {}
    assert any_cache.get("other") == 1
    assert any_cache.get("plain") == 2


def test_invalidate_tags__any_one_tag_of_an_entry_hides_it(any_cache):
    any_cache.set("a", 1, tags=["t1", "t2"])
    any_cache.set("b", 2, tags=["t2"])
    any_cache.invalidate_tags("t1")
    assert any_cache.get("a") is None
    assert any_cache.get("b") == 2
    assert any_cache.has_key("a") is False


def test_entries_written_after_invalidation_are_valid(any_cache):
    any_cache.set("a", 1, tags=["t"])
    any_cache.invalidate_tags("t")
    any_cache.set("a", 2, tags=["t"])
    assert any_cache.get("a") == 2


def test_add_set_many_get_or_set_and_async_set_take_tags(any_cache):
    assert any_cache.add("added", 1, tags=["t"])
    any_cache.set_many({"m1": 1, "m2": 2}, tags=["t"])
    assert any_cache.get_or_set("gos", lambda: 3, tags=["t"]) == 3
    async_to_sync(any_cache.aset)("async", 4, tags=["t"])
    assert async_to_sync(any_cache.aget_or_set)("agos", 5, tags=["t"]) == 5
    keys = ["added", "m1", "m2", "gos", "async", "agos"]
    assert len(any_cache.get_many(keys)) == 6
    async_to_sync(any_cache.ainvalidate_tags)("t")
    assert any_cache.get_many(keys) == {}


def test_add__replaces_an_invalidated_entry(any_cache):
    any_cache.set("a", 1, tags=["t"])
    any_cache.invalidate_tags("t")
    assert any_cache.add("a", 2, tags=["t"]) is True
    assert any_cache.get("a") == 2


def test_get_or_set__does_not_store_a_value_computed_across_an_invalidation(any_cache):
    def compute():
        # Another process invalidates while this value is being computed from old data.
        any_cache.invalidate_tags("product:1")
        return "computed from the old row"

    assert any_cache.get_or_set("p1", compute, tags=["product:1"]) == "computed from the old row"
    assert any_cache.get("p1") is None
    assert any_cache.get_or_set("p1", lambda: "fresh", tags=["product:1"]) == "fresh"
    assert any_cache.get("p1") == "fresh"


def test_incr_and_incr_version__keep_the_tags(any_cache):
    any_cache.set("n", 1, tags=["counter"])
    assert any_cache.incr("n", 5) == 6
    assert any_cache.get("n") == 6
    any_cache.set("moved", "x", tags=["mover"])
    assert any_cache.incr_version("moved") == 2
    assert any_cache.get("moved", version=2) == "x"
    any_cache.invalidate_tags("counter", "mover")
    assert any_cache.get("n") is None
    assert any_cache.get("moved", version=2) is None
    with pytest.raises(ValueError):
        any_cache.incr("n")


def test_touch__keeps_tagged_entries_valid_past_their_first_timeout(any_cache):
    import time

    any_cache.set("short", 1, timeout=0.4, tags=["t"])
    assert any_cache.touch("short", 30)
    time.sleep(0.6)
    assert any_cache.get("short") == 1
    any_cache.invalidate_tags("t")
    assert any_cache.get("short") is None


@pytest.mark.parametrize(
    ("tags", "error"),
    [
        ([None], TypeError),
        (["ok", 3], TypeError),
        ("single-string", TypeError),
        (5, TypeError),
        (["has space"], ValueError),
        ([""], ValueError),
        (["x" * 201], ValueError),
        (["new\nline"], ValueError),
    ],
)
def test_bad_tags__raise_and_store_nothing(any_cache, tags, error):
    with pytest.raises(error, match="tag"):
        any_cache.set("k", 1, tags=tags)
    with pytest.raises(error):
        any_cache.set_many({"k2": 2}, tags=tags)
    with pytest.raises(error):
        any_cache.get_or_set("k3", 3, tags=tags)
    assert any_cache.get_many(["k", "k2", "k3"]) == {}


def test_invalidate_tags__rejects_a_list_instead_of_separate_tags(any_cache):
    with pytest.raises(TypeError, match="str"):
        any_cache.invalidate_tags(["a", "b"])


def test_losing_a_bucket_of_the_slot_table__makes_entries_invalid_for_good(
    clean_redis_servers, make_cache
):
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    cache.set("a", 1, tags=["t"])
    assert cache.get("a") == 1
    raw = server.client()
    bucket = bucket_key(f"{cache.key_prefix}:_tc:", "t")
    assert raw.type(bucket) == b"hash"
    assert raw.delete(bucket) == 1  # what an eviction or a partial flush does
    assert cache.get("a") is None
    cache.set("b", 2, tags=["t"])  # a new token is drawn from the counter...
    assert cache.get("b") == 2
    assert cache.get("a") is None  # ...and the old entry never matches it


def test_losing_the_meta_hash__empties_the_slot_table_so_no_token_comes_back(
    clean_redis_servers, make_cache
):
    """The token counter lives in the meta hash, and is started over with it. The
    slot table goes with it (and the generation), so an entry recorded under an
    old token never matches a new one."""
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    ns = f"{cache.key_prefix}:_tc:"
    raw = server.client()
    cache.set("old", 1, tags=["t"])
    first = raw.hget(bucket_key(ns, "t"), bucket_field("t"))
    assert cache.get("old") == 1
    raw.delete(ns + "meta")  # evicted, say: the table and the generation outlive it
    cache.set("new", 2, tags=["t"])
    assert cache.get("new") == 2
    assert cache.get("old") is None
    assert raw.hget(bucket_key(ns, "t"), bucket_field("t")) != first  # a counter of its own
    cache.invalidate_tags("t")
    cache.set("newer", 3, tags=["t"])
    assert cache.get("newer") == 3
    # Had the table outlived the counter, "new" (written under the token it still
    # held) could match a token drawn again for "newer": a stale read.
    assert cache.get("new") is None
    assert cache.get("old") is None


def test_flushdb__leaves_an_entry_that_comes_back_missing_though_its_token_is_drawn_again(
    clean_redis_servers, make_cache
):
    """FLUSHDB drops the meta hash, its token counter, the slot table and the
    generation at once. An entry that comes back afterwards (restored from an
    older copy: the same bytes) misses, even when its slot holds the very token
    it recorded again: its generation is gone."""
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    ns = f"{cache.key_prefix}:_tc:"
    raw = server.client()
    cache.set("old", 1, tags=["t"])
    assert cache.get("old") == 1
    made = cache.make_and_validate_key("old")
    saved, token = raw.get(made), raw.hget(bucket_key(ns, "t"), bucket_field("t"))
    raw.flushdb()
    assert cache.get("old") is None
    cache.set("new", 2, tags=["t"])
    assert cache.get("new") == 2
    raw.hset(bucket_key(ns, "t"), bucket_field("t"), token)  # as if drawn again
    raw.set(made, saved)
    assert cache.get("old") is None


def test_a_bucket_that_outlived_a_start_over__never_makes_a_newer_entry_valid_again(
    clean_redis_servers, make_cache
):
    """A start-over empties the slot table, but a bucket it could not reach (still
    on the other node of a slot migration, or restored from an older copy) may come
    back later with the old counter's tokens. The new counter starts at random, so
    it does not draw them again: an entry written after the start-over and then
    invalidated stays invalid when the old bucket returns. (A counter that began
    at 0 again drew the same first token, and the entry was served again.)"""
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    ns = f"{cache.key_prefix}:_tc:"
    raw = server.client()
    cache.set("old", 1, tags=["t"])
    bucket = bucket_key(ns, "t")
    kept = raw.dump(bucket)
    raw.delete(ns + "meta")  # the hash is lost: the next call starts it over
    cache.set("new", 2, tags=["t"])
    assert cache.get("new") == 2
    cache.invalidate_tags("t")
    assert cache.get("new") is None
    raw.restore(bucket, 0, kept, replace=True)  # the old counter's token is back
    assert cache.get("new") is None
    assert cache.get("old") is None


def test_losing_the_generation__makes_every_tagged_entry_invalid(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    cache.set("tagged", 1, tags=["t"])
    cache.set("plain", 2)
    assert cache.get("tagged") == 1
    assert server.client().delete(f"{cache.key_prefix}:_tc:gen2") == 1
    assert cache.get("tagged") is None
    assert cache.get("plain") == 2


def test_two_tags_sharing_a_slot__share_a_token_and_so_never_serve_stale(any_cache):
    """Tags are hashed to a fixed table of slots: two may share one. Invalidating
    either then hides the other's entries too (lost hits, never a stale read)."""
    first, second = _sharing_a_slot()
    any_cache.set("one", 1, tags=[first])
    any_cache.set("two", 2, tags=[second])
    assert any_cache.get_many(["one", "two"]) == {"one": 1, "two": 2}
    any_cache.invalidate_tags(first)
    assert any_cache.get_many(["one", "two"]) == {}


def test_an_entry_of_the_older_layout__misses(clean_redis_servers, make_cache):
    """An entry written by an earlier development checkout, with tag names in
    its header and a token key per tag (``t:<tag>``, generation ``gen``), finds
    no generation of its layout: it misses, however its header reads."""
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    ns = f"{cache.key_prefix}:_tc:"
    raw = server.client()
    cache.set("warm", 1, tags=["t"])
    key = cache.make_and_validate_key("old")
    body = raw.get(cache.make_and_validate_key("warm")).split(b"\n", 4)[-1]
    header = b"1\nabc\nt\ntok\n"
    raw.set(ns + "gen", b"abc")
    raw.set(ns + "t:t", b"tok")
    raw.set(key, b"T%d:%s%s" % (len(header), header, body))
    assert cache.get("warm") == 1
    assert cache.get("old") is None


def test_tag_state__stays_within_the_fixed_slot_table(clean_redis_servers, make_cache):
    """However many distinct tags are used and invalidated, tag state is the
    slot table's small hashes: no key per tag, nothing left to expire."""
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    raw = server.client()
    tags = [f"shop.product:{i}" for i in range(5000)]
    cache.set_many_tagged({f"k{i}": (i, [tag]) for i, tag in enumerate(tags)})
    cache.invalidate_tags(*tags)
    cache.set_many_tagged({f"k{i}": (i, [tag]) for i, tag in enumerate(tags)})
    buckets = list(raw.scan_iter(match=f"{cache.key_prefix}:_tc:s:*"))
    assert 0 < len(buckets) <= BUCKETS
    assert not list(raw.scan_iter(match=f"{cache.key_prefix}:_tc:t:*"))
    for bucket in buckets[:50]:
        assert raw.object("encoding", bucket) == b"listpack"
        assert raw.pttl(bucket) == -1
    assert cache.get("k7") == 7


def _sharing_a_slot() -> tuple[str, str]:
    seen: dict[int, str] = {}
    i = 0
    while True:
        tag = f"shared:{i}"
        slot = slot_of(tag)
        if slot in seen:
            return seen[slot], tag
        seen[slot] = tag
        i += 1


def test_ten_thousand_tags_at_once__are_invalidated_locked_and_unlocked(any_cache):
    """A bulk_update of 10,000 rows invalidates 10,000 instance tags in one call:
    more values than a Redis Function may unpack at once (about 8,000)."""
    tags = [f"row:{i}" for i in range(10_000)]
    any_cache.set("first", 1, tags=[tags[0]])
    any_cache.set("last", 2, tags=[tags[-1]])
    any_cache.invalidate_tags(*tags)
    assert any_cache.get_many(["first", "last"]) == {}
    any_cache.lock_tags("bulk", tags, seconds=30)
    any_cache.set("last", 3, tags=[tags[-1]])
    assert any_cache.get("last") is None  # locked: not cached
    any_cache.unlock_tags("bulk", tags)
    any_cache.set("last", 4, tags=[tags[-1]])
    assert any_cache.get("last") == 4


def test_tag_metadata_does_not_grow_with_tagged_entries(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    cache.set_many({f"k{i}": i for i in range(1000)}, tags=["big", "other"])
    # 1000 entries, 2 tag tokens, the generation and the meta hash: nothing per entry.
    assert server.client().dbsize() == 1000 + 4


def test_invalidate_tags__is_seen_by_another_process(clean_redis_servers, make_cache):
    urls = [server.url for server in clean_redis_servers]
    cache = make_cache(urls, KEY_PREFIX="xproc")
    cache.set_many({f"k{i}": i for i in range(50)}, tags=["shared"])
    assert len(cache.get_many([f"k{i}" for i in range(50)])) == 50
    script = (
        "import django; django.setup();"
        "from django_tiercache.backend import TierCache;"
        f"TierCache({urls!r}, {{'KEY_PREFIX': 'xproc'}}).invalidate_tags('shared')"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=60)  # noqa: S603
    assert cache.get_many([f"k{i}" for i in range(50)]) == {}


def test_a_family_tag_invalidates_every_member(any_cache):
    any_cache.set("p1", 1, tags=["shop.product:1"])
    any_cache.set("p2", 2, tags=["shop.product:2"])
    any_cache.set("c1", 3, tags=["shop.category:1"])
    any_cache.invalidate_tags("shop.product:*")
    assert any_cache.get_many(["p1", "p2", "c1"]) == {"c1": 3}


def test_locked_tags__invalidate_and_refuse_fills_until_unlocked(any_cache):
    any_cache.set("a", "old", tags=["row:1"])
    any_cache.lock_tags("writer-1", ["row:1"], seconds=30)
    assert any_cache.get("a") is None
    any_cache.set("a", "read before the commit", tags=["row:1"])
    assert any_cache.get("a") is None
    assert any_cache.get_or_set("a", "computed", tags=["row:1"]) == "computed"
    assert any_cache.get("a") is None
    any_cache.set("untagged", 1)  # other entries are not affected
    assert any_cache.get("untagged") == 1
    any_cache.unlock_tags("writer-1", ["row:1"])
    any_cache.set("a", "new", tags=["row:1"])
    assert any_cache.get("a") == "new"


def test_a_lock_held_by_two_writers__needs_both_to_release(any_cache):
    any_cache.lock_tags("w1", ["row:1"], seconds=30)
    any_cache.lock_tags("w2", ["row:1"], seconds=30)
    any_cache.unlock_tags("w1", ["row:1"])
    any_cache.set("a", 1, tags=["row:1"])
    assert any_cache.get("a") is None
    any_cache.unlock_tags("w2", ["row:1"])
    any_cache.set("a", 1, tags=["row:1"])
    assert any_cache.get("a") == 1


def test_an_abandoned_lock__expires(any_cache):
    import time

    any_cache.lock_tags("crashed-writer", ["row:1"], seconds=0.3)
    any_cache.set("a", 1, tags=["row:1"])
    assert any_cache.get("a") is None
    time.sleep(0.4)
    any_cache.set("a", 1, tags=["row:1"])
    assert any_cache.get("a") == 1


def test_get_or_set_many__loads_only_the_misses_and_tags_each_key(any_cache):
    any_cache.set("k1", "cached", tags=["t:1"])
    calls = []

    def load(keys):
        calls.append(sorted(keys))
        return {key: f"loaded {key}" for key in keys if key != "k3"}

    tags = {"k1": ["t:1"], "k2": ["t:2"], "k3": ["t:3"]}
    assert any_cache.get_or_set_many(tags, load) == {"k1": "cached", "k2": "loaded k2"}
    assert calls == [["k2", "k3"]]
    any_cache.invalidate_tags("t:2")
    assert any_cache.get_many(["k1", "k2"]) == {"k1": "cached"}


def test_get_or_set_many__does_not_store_values_loaded_across_an_invalidation(any_cache):
    def load(keys):
        any_cache.invalidate_tags("t:1")
        return dict.fromkeys(keys, "stale")

    assert any_cache.get_or_set_many({"k1": ["t:1"], "k2": ["t:2"]}, load) == {
        "k1": "stale",
        "k2": "stale",
    }
    assert any_cache.get_many(["k1", "k2"]) == {"k2": "stale"}


def test_set_many_tagged__gives_each_key_its_own_tags(any_cache):
    failed = any_cache.set_many_tagged({"a": (1, ["t:a"]), "b": (2, ["t:b"]), "c": (3, [])})
    assert failed == []
    assert any_cache.get_many(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}
    any_cache.invalidate_tags("t:a")
    assert any_cache.get_many(["a", "b", "c"]) == {"b": 2, "c": 3}
    any_cache.invalidate_tags("t:*")
    assert any_cache.get_many(["a", "b", "c"]) == {"c": 3}
    with pytest.raises(TypeError):
        any_cache.set_many_tagged({"d": (4, [None])})
    assert any_cache.get("d") is None


def test_the_in_process_twin__loses_buckets_and_its_meta_record_as_redis_does(make_cache):
    """memory:// keeps the same slot table (stores/memory.py): a culled bucket costs
    its entries their hits, and a meta record started over (its counter with it)
    empties the table, so no old token is drawn again under the same generation."""
    import uuid

    cache = make_cache(f"memory://test-{uuid.uuid4().hex}")
    store = cache._partitions[0].store
    bucket = bucket_key(store.ns, "t")
    cache.set("a", 1, tags=["t"])
    assert cache.get("a") == 1
    assert store.space.delete(bucket)  # what culling does
    assert cache.get("a") is None
    cache.set("b", 2, tags=["t"])
    assert cache.get("b") == 2 and cache.get("a") is None
    assert store.space.get(bucket)[int(bucket_field("t"))] == "2"  # the second token drawn
    assert store.space.delete(store.ns + "meta")
    cache.set("c", 3, tags=["t"])
    assert cache.get("c") == 3
    assert store.space.get(bucket)[int(bucket_field("t"))] == "1"  # the counter started over
    cache.invalidate_tags("t")
    cache.set("d", 4, tags=["t"])
    assert store.space.get(bucket)[int(bucket_field("t"))] == "2"  # b's token, drawn again...
    assert cache.get("b") is None  # ...under a new generation: b never matches it


def test_a_release_by_one_writer__keeps_the_slot_locked_for_another_writer_of_a_sharing_tag(
    any_cache,
):
    """Locks are held per slot: writer two releasing its tag must not lift writer
    one's lock on another tag of the same slot, whose commit is still to come."""
    first, second = _sharing_a_slot()
    any_cache.lock_tags("writer-1", [first], 30)
    any_cache.lock_tags("writer-2", [second], 30)
    any_cache.unlock_tags("writer-2", [second])
    any_cache.set("k", "before the commit", tags=[first])  # read before writer one commits
    assert any_cache.get("k") is None
    any_cache.unlock_tags("writer-1", [first])
    any_cache.set("k", "after the commit", tags=[first])
    assert any_cache.get("k") == "after the commit"
