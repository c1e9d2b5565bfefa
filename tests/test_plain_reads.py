"""Reads of entries whose tags the process knows: one MGET, checked by the client
(storage/stores/plain_reads.py), never less safe than the read Function."""

import redis

from django_tiercache.storage.stores import plain_reads
from django_tiercache.storage.stores.slots import (
    bucket_field,
    bucket_key,
    slot_name,
    slot_names,
    slot_of,
)


def command_calls(server, name: str) -> int:
    stats = redis.Redis(port=server.port).info("commandstats")
    return stats.get(f"cmdstat_{name}", {}).get("calls", 0)


def calls(server) -> tuple[int, int]:
    return command_calls(server, "mget"), command_calls(server, "fcall")


def raw(server, cache):
    store = cache._partitions[0].store
    return redis.Redis(port=server.port, db=0), store


def test_a_known_entry__is_read_with_one_mget_and_no_function(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    cache = make_cache([server.url])
    cache.set("k", {"v": 1}, tags=["shop.product:1"])  # the write teaches its tags
    cache.set("plain", 2)
    assert cache.get("k") == {"v": 1}  # greets the connection (a Function) first
    before = calls(server)
    assert cache.get("k") == {"v": 1}
    assert cache.get("plain") == 2
    assert cache.get_many(["k", "plain"]) == {"k": {"v": 1}, "plain": 2}
    mget, fcall = calls(server)
    assert (mget - before[0], fcall - before[1]) == (3, 0)


def test_an_entry_read_through_the_function__teaches_its_tags(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    writer, reader = make_cache([server.url]), make_cache([server.url])
    writer.set("k", 1, tags=["a", "b:2"])
    reader._partitions[0].store.hints.tags.clear()  # as in another process
    assert reader.get("k") == 1  # the Function
    learned = reader._partitions[0].store.hints.tags[_made(reader, "k")]
    assert learned == slot_names(("a", "b:*", "b:2"))  # as slots: headers keep no names
    before = calls(server)
    assert reader.get("k") == 1
    assert calls(server)[1] == before[1]


def _made(cache, key):
    return cache.make_and_validate_key(key)


def test_a_lost_bucket_or_generation__reads_as_a_miss(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    cache = make_cache([server.url])
    client, store = raw(server, cache)
    for lost in (bucket_key("", "a"), "gen2"):
        cache.set("k", 1, tags=["a"])
        assert cache.get("k") == 1
        client.delete(store.ns + lost)  # evicted, or someone's DEL
        before = calls(server)
        assert cache.get("k") is None
        assert calls(server)[1] == before[1]  # the plain read decided it


def test_an_invalidated_tag__reads_as_a_miss(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    cache, other = make_cache([server.url]), make_cache([server.url])
    cache.set("k", 1, tags=["a", "b"])
    assert cache.get("k") == 1
    other.invalidate_tags("b")
    assert cache.get("k") is None


def test_tags_known_wrongly__cost_a_function_read_never_a_stale_value(
    clean_redis_servers, make_cache
):
    server = clean_redis_servers[0]
    cache = make_cache([server.url])
    cache.set("k", 1, tags=["a"])
    hints = cache._partitions[0].store.hints
    made = _made(cache, "k")
    for wrong in (("z",), ()):  # another tag; untagged
        hints.tags[made] = wrong  # as if another process rewrote the entry meanwhile
        cache.invalidate_tags("a")
        before = calls(server)
        assert cache.get("k") is None  # the token of "a" was never fetched: not trusted
        assert calls(server)[1] == before[1] + 1  # read again through the Function
        cache.set("k", 1, tags=["a"])
        hints.tags[made] = wrong
        assert cache.get("k") == 1
        assert hints.tags[made] == (slot_name("a"),)  # learned from what the Function read


def test_a_header_that_does_not_parse__reads_as_a_miss(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    cache = make_cache([server.url])
    client, store = raw(server, cache)
    cache.set("k", 1, tags=["a"])
    assert cache.get("k") == 1
    made = _made(cache, "k")
    good = client.get(made)
    colon = good.index(b":")
    length = int(good[1:colon])
    header = good[colon + 1 : colon + 1 + length]
    for bad in (
        b"T" + good[1:colon] + b";" + good[colon + 1 :],  # no colon
        b"Tx:" + good[colon + 1 :],  # no length
        b"T9999:" + good[colon + 1 :],  # longer than the value
        b"T%d:" % (length + 2) + b"x\n" + header + good[colon + 1 + length :],  # no count
        b"T%d:" % (length + 4) + header + b"c\nd\n" + good[colon + 1 + length :],  # fields left
    ):
        client.set(made, bad)
        assert cache.get("k") is None, bad
    assert not cache._policy.counts  # a miss, never an error


def test_a_lost_lease__is_renewed_and_the_entry_read_again(clean_redis_servers, make_cache):
    servers = clean_redis_servers[:3]
    cache = make_cache([s.url for s in servers])
    cache.set("k", 1, tags=["a"])
    assert cache.get("k") == 1
    assert cache.get("k") == 1
    partition = cache._partition(_made(cache, "k"))
    server = next(s for s in servers if s.url == partition.url)
    client = redis.Redis(port=server.port)
    store = partition.store
    before = calls(server)
    assert cache.get("k") == 1
    assert calls(server)[1] == before[1]  # the lease was known fresh: a plain read
    client.delete(store.ns + "lease")
    assert cache.get("k") == 1  # no lease: unverified, renewed, read again
    assert client.exists(store.ns + "lease")


def test_a_lease_not_heard_of_lately__is_read_through_the_function(clean_redis_servers, make_cache):
    servers = clean_redis_servers[:3]
    cache = make_cache([s.url for s in servers])
    cache.set("k", 1, tags=["a"])
    assert cache.get("k") == 1
    partition = cache._partition(_made(cache, "k"))
    server = next(s for s in servers if s.url == partition.url)
    hints = partition.store.hints
    hints.plain_until = 0.0  # the lease's remaining time, as last heard, is half gone
    before = calls(server)
    assert cache.get("k") == 1
    assert calls(server)[1] == before[1] + 1
    assert hints.plain_until > 0  # heard again: the next reads are plain
    before = calls(server)
    assert cache.get("k") == 1
    assert calls(server)[1] == before[1]


def test_a_restarted_server__is_greeted_before_a_plain_read_is_trusted(
    clean_redis_servers, make_cache
):
    server = clean_redis_servers[0]
    cache = make_cache([server.url])
    cache.set("k", 1, tags=["a"])
    assert cache.get("k") == 1
    server.stop()
    server.start()
    # Planted on the new, empty server before anything greets it: the read
    # must not trust the entry's header (the server lost every token's history).
    client, store = raw(server, cache)
    client.set(store.ns + "gen2", b"g")
    client.hset(bucket_key(store.ns, "a"), bucket_field("a"), b"1")
    header, made = b"1\ng\n%d\n1\n" % slot_of("a"), _made(cache, "k")
    client.set(made, b"T%d:" % len(header) + header + cache._codec.encode(made, 1))
    assert cache.get("k") is None
    assert not cache._policy.counts


def test_the_memory_of_tags__is_bounded(clean_redis_servers, make_cache, monkeypatch):
    monkeypatch.setattr(plain_reads, "REMEMBERED_KEYS", 3)
    cache = make_cache([clean_redis_servers[0].url])
    hints = cache._partitions[0].store.hints
    for i in range(10):
        cache.set(f"k{i}", i, tags=["a"])
        assert len(hints.tags) <= 3
    assert cache.get("k9") == 9


def test_a_meta_hash_started_over_mid_read__cannot_make_a_drawn_again_token_match(
    clean_redis_servers, make_cache
):
    """A plain read's commands run one after the other: the entry's MGET, the
    tokens' HMGETs, the generation's GET. Between the first two the meta hash may
    be lost and started over, its token counter with it, and a fill may draw the
    very token a stale entry recorded (unlikely, from a counter started at random,
    but the generation must not depend on it). The generation, read last, is new then:
    the entry misses. Had it been read with the entry, the stale entry would match."""
    server = clean_redis_servers[0]
    cache = make_cache([server.url])
    client, store = raw(server, cache)
    cache.set("k", "old", tags=["a"])
    assert cache.get("k") == "old"
    token = client.hget(bucket_key(store.ns, "a"), bucket_field("a"))
    made, leased = _made(cache, "k"), cache._fencing.enabled
    plain = plain_reads.plain_command(store.hints, store.ns, [made], leased)
    assert plain is not None
    mget, behind, slots = plain
    cache.invalidate_tags("a")  # "k" is stale from here on
    entry_read = client.execute_command(*mget)
    gen_then = client.get(store.ns + "gen2")
    client.delete(store.ns + "meta")  # lost: the next call starts it over
    cache.set("other", "new", tags=["a"])
    assert cache.get("other") == "new"
    # The new counter starts at random (lua.py counter_base): as if it drew the
    # stale entry's token for "a" again all the same.
    client.hset(bucket_key(store.ns, "a"), bucket_field("a"), token)
    rest = [client.execute_command(*command) for command in behind.commands]
    lease_ms = store.hints.lease_ms
    assert plain_reads.checked_reply(lease_ms, [made], slots, leased, [entry_read, *rest])[1] == [
        None
    ]
    stale = plain_reads.checked_reply(
        lease_ms, [made], slots, leased, [entry_read, *rest[:-1], gen_then]
    )
    assert stale[1] != [None]  # what reading the generation first would have served
    assert cache.get("k") is None
