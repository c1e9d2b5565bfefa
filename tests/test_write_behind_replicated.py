"""Write-behind with its journal on a Sentinel-managed primary or a Redis Cluster.

Real servers on free loopback ports (conftest: the Sentinel sets, the clusters):
save and drain on each; a primary killed mid-run loses no save that returned;
a replica that does not confirm (SIGSTOP) makes a save take ON_UNAVAILABLE,
and the entry its primary holds anyway never lands over a newer state.
"""

from __future__ import annotations

import time

import pytest
import redis
from django.core.checks import run_checks

from django_tiercache import write_behind
from django_tiercache.write_behind import server
from django_tiercache.write_behind.journal import get_journal, journal_url
from django_tiercache.write_behind.server import NotReplicated
from django_tiercache.write_behind.settings import configured
from tests.redis_servers import (
    ReplicaServer,
    crash,
    cut_off_replica,
    free_port,
    start_on_a_free_port,
)
from tests.testapp.models import Counter
from tests.write_behind_support import configure

pytestmark = pytest.mark.django_db(transaction=True)

# The tests below stop the replica on purpose, and each unconfirmed call waits this
# long; long enough that a replica merely slow on a loaded machine still confirms
# (0.2 s was not, once, with four test workers: the setup's saves went to the
# database at once and the test lost its premise).
REPLICA_TIMEOUT = 1.0
# How long a failover may take before the test gives up (a bound, not a figure).
RECOVERY_BOUND = 60.0
# Tests that make many unconfirmed calls on purpose, and tolerate confirmed and
# direct saves alike: short there.
SHORT_REPLICA_TIMEOUT = 0.2


def in_db(pk):
    return Counter.objects.filter(pk=pk).values_list("hits", "note").first()


def on_journal(settings, url, **values):
    values.setdefault("REPLICA_TIMEOUT", REPLICA_TIMEOUT)
    values.setdefault("SOCKET_TIMEOUT", 3 * REPLICA_TIMEOUT)  # a WAIT must end before it
    configure(settings, REDIS_URL=url, **values)


def test_journal_on_sentinel__saves_reach_the_replica_and_drain(
    clean_sentinel_set, journal_prefix, settings
):
    on_journal(settings, clean_sentinel_set.url())
    row = Counter.objects.create(name="sentinel")
    row.hits, row.note = 5, "queued"
    assert write_behind.save(row)  # a version: queued, and confirmed by the replica
    state_key = "{" + journal_prefix + "}:state"
    with clean_sentinel_set.replica.client() as replica:
        assert replica.hexists(state_key, f"testapp.counter:{row.pk}")
    assert in_db(row.pk) == (0, "")
    assert write_behind.flush() == 1
    assert in_db(row.pk) == (5, "queued")
    assert write_behind.stats()["pending"] == 0


def test_journal_on_a_cluster__lives_in_one_slot_and_drains(
    clean_redis_cluster, journal_prefix, settings
):
    on_journal(settings, clean_redis_cluster.url())
    rows = [Counter.objects.create(name=f"cluster{i}") for i in range(3)]
    for i, row in enumerate(rows):
        row.hits = 10 + i
        assert write_behind.save(row)
    assert get_journal().latest([f"testapp.counter:{rows[0].pk}"])  # pipelines work there
    journal = get_journal()
    master = clean_redis_cluster.node_serving(journal.server.slot)  # type: ignore[attr-defined]
    with master.client() as client:
        assert client.hlen("{" + journal_prefix + "}:state") == 3
    assert write_behind.flush() == 3
    assert [in_db(row.pk)[0] for row in rows] == [10, 11, 12]
    assert write_behind.stats()["pending"] == 0


def test_journal_on_a_cluster__a_replica_not_confirming_makes_the_save_direct(
    fresh_redis_cluster, journal_prefix, settings
):
    """The WAIT goes to the master holding the journal's slot, on the enqueue's own
    connection: with that master's replica frozen, the save is written at once."""
    on_journal(settings, fresh_redis_cluster.url())
    row = Counter.objects.create(name="cluster-frozen")
    row.hits = 1
    assert write_behind.save(row)
    master = fresh_redis_cluster.node_serving(get_journal().server.slot)  # type: ignore[attr-defined]
    (replica,) = [n for n in fresh_redis_cluster.nodes if _replica_of(n) == master.port]
    replica.pause()
    try:
        row.hits = 2
        assert write_behind.save(row) is None
        assert in_db(row.pk) == (2, "")
    finally:
        replica.resume()
    assert write_behind.flush() == 0
    assert in_db(row.pk) == (2, "")


def test_journal_on_a_cluster__its_master_killed__no_save_that_returned_is_lost(
    fresh_redis_cluster, journal_prefix, settings
):
    """The master serving the journal's slot is cut off from its replica, then dies;
    the replica is promoted with what it had. Saves confirmed before the cut are
    drained from it; a save the replica never confirmed went to the database at once
    (without the WAIT it would be queued on the master only, and lost with it).
    (The promoted replica has no replica of its own: each drain's ACK is unconfirmed,
    so a flush writes one batch and raises NotReplicated, as documented.)"""
    cluster = fresh_redis_cluster
    # The whole REPLICA_TIMEOUT: the first saves must be confirmed, and 0.2 s was not,
    # once, on a fresh cluster under a loaded CI run (the first save went to the database).
    on_journal(settings, cluster.url(), BATCH_SIZE=2)
    rows = [Counter.objects.create(name=f"cluster-failover{i}") for i in range(4)]
    for i, row in enumerate(rows[:3]):
        row.hits = 10 + i
        assert write_behind.save(row)  # queued, and confirmed by the master's replica
    master = cluster.node_serving(get_journal().server.slot)  # type: ignore[attr-defined]
    (replica,) = [n for n in cluster.nodes if _replica_of(n) == master.port]
    cut_off_replica(master, replica)
    rows[3].hits = 20
    assert write_behind.save(rows[3]) is None  # not confirmed: written at once
    crash(master)
    replica.resume()
    cluster.wait_until(lambda: cluster.role_of(replica) == "master", "replica promoted")
    flushes: list = []

    def flushed() -> bool:
        try:
            flushes.append(write_behind.flush())
        except NotReplicated:  # a batch written, its ACK unconfirmed
            flushes.append("unconfirmed")
        except redis.ConnectionError:  # the slot map still names the dead master
            flushes.append("unreachable")
        return write_behind.stats()["pending"] == 0 if flushes[-1] == 0 else False

    cluster.wait_until(flushed, "the journal drained on the promoted replica")
    assert [in_db(row.pk)[0] for row in rows] == [10, 11, 12, 20], flushes


def _replica_of(node) -> int | None:
    with node.client() as client:
        info = client.info("replication")
    return int(info["master_port"]) if info["role"] == "slave" else None


def test_journal_url__a_sentinel_or_cluster_cache_holds_the_journal(settings):
    sentinel = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/tcmaster/2"
    cluster = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001/"
    for location, journal in ((sentinel, sentinel), (cluster, cluster)):
        settings.CACHES = {
            **settings.CACHES,
            "shop": {"BACKEND": "django_tiercache.backend.TierCache", "LOCATION": location},
        }
        settings.TIERCACHE = {**settings.TIERCACHE, "WRITE_BEHIND": {"CACHE": "shop"}}
        assert journal_url(configured()) == journal


def test_check__bad_replica_settings_and_urls_are_tiercache_e010(settings):
    settings.TIERCACHE = {
        "WRITE_BEHIND": {"REPLICAS": -1, "REPLICA_TIMEOUT": 5, "REDIS_URL": "memory://x"}
    }
    found = [m for m in run_checks() if m.id == "tiercache.E010"]
    texts = " ".join(m.msg for m in found)
    assert len(found) == 3 and all(m.hint for m in found)
    assert "REPLICAS" in texts and "REPLICA_TIMEOUT" in texts and "memory://x" in texts
    for bad in ({"REDIS_URL": "redis+sentinel://s1:26379/"}, {"REPLICA_TIMEOUT": 0}):
        settings.TIERCACHE = {"WRITE_BEHIND": bad}  # no service; no wait at all
        assert [m.id for m in run_checks() if m.id.startswith("tiercache.E")] == ["tiercache.E010"]
    settings.TIERCACHE = {
        "WRITE_BEHIND": {
            "REDIS_URL": "redis+cluster://h1:7000,h2:7000/",
            "REPLICAS": 2,
            "REPLICA_TIMEOUT": 0.1,
        }
    }
    assert not [m for m in run_checks() if m.id == "tiercache.E010"]


@pytest.mark.parametrize("policy", ["save", "raise"])
def test_replica_not_confirming__save_follows_on_unavailable_and_nothing_older_lands_later(
    sentinel_set, journal_prefix, settings, policy
):
    """The replica is frozen: the primary holds the enqueue, WAIT times out. "save"
    writes the row at once; "raise" raises. Either way the entry the primary holds
    (and an older pending state under it) never lands over a newer state."""
    on_journal(settings, sentinel_set.url(), ON_UNAVAILABLE=policy)
    row = Counter.objects.create(name="frozen")
    row.hits, row.note = 1, "older"
    assert write_behind.save(row)  # pending, confirmed
    sentinel_set.replica.pause()
    try:
        row.hits, row.note = 2, "unconfirmed"
        if policy == "save":
            assert write_behind.save(row) is None
            assert in_db(row.pk) == (2, "unconfirmed")  # at once
        else:
            with pytest.raises(write_behind.WriteBehindUnavailable, match="not confirmed"):
                write_behind.save(row)
            assert in_db(row.pk) == (0, "")
        assert write_behind.stats()["not_replicated"] >= 1
        row.hits, row.note = 3, "newest"
        row.save()  # a direct write, after the unconfirmed entry
        assert write_behind.flush() == 0  # the direct write took the pending state first
    finally:
        sentinel_set.replica.resume()
    assert write_behind.flush() == 0
    assert in_db(row.pk) == (3, "newest")
    assert write_behind.stats()["pending"] == 0


def waits_on(client) -> int:
    return client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)


def test_replica_not_confirming__the_saves_after_it_do_not_wait_until_a_recheck(
    sentinel_set, journal_prefix, settings, monkeypatch
):
    """After a WAIT no replica confirmed, the changes of the next RECHECK_REPLICAS
    seconds send none: each save takes ON_UNAVAILABLE at once, as if its own WAIT had
    timed out, instead of each waiting REPLICA_TIMEOUT. After that a change waits
    again, and once a replica confirms it, saves are queued again."""
    monkeypatch.setattr(server, "RECHECK_REPLICAS", 3600.0)  # the test is all "lately"
    on_journal(settings, sentinel_set.url())
    rows = [Counter.objects.create(name=f"recheck{i}") for i in range(5)]
    assert write_behind.save(rows[0])  # confirmed (and the script is loaded: no retry below)
    unconfirmed = write_behind.stats()["not_replicated"]
    primary = sentinel_set.server_on(sentinel_set.current_primary_port())
    sentinel_set.replica.pause()
    try:
        with primary.client() as client:
            waits = waits_on(client)
            for i, row in enumerate(rows):
                row.hits = i + 1
                assert write_behind.save(row) is None  # written to the database at once
            assert waits_on(client) == waits + 1  # the first save waited, no other
    finally:
        sentinel_set.replica.resume()
    assert [in_db(row.pk)[0] for row in rows] == [1, 2, 3, 4, 5]
    assert write_behind.stats()["not_replicated"] == unconfirmed + 5
    assert write_behind.stats()["pending"] == 0  # each direct save took its entry along
    monkeypatch.setattr(server, "RECHECK_REPLICAS", 0.0)  # "lately" is over
    rows[0].hits = 10
    assert write_behind.save(rows[0])  # waited, confirmed: queued again
    assert write_behind.flush() == 1
    assert in_db(rows[0].pk)[0] == 10


@pytest.mark.parametrize("patient", [False, True])
def test_replica_not_confirming__a_primary_without_the_script_costs_an_enqueue_one_wait(
    sentinel_set, patient
):
    """A primary that never ran the journal's scripts (a replica just promoted) answers
    the first EVALSHA with NOSCRIPT, and the WAIT pipelined after it times out for
    nothing: an enqueue (not patient) does not wait a second time; a drain's ACK does.
    One connection, so that the WAIT has this test's unreplicated write to wait for."""
    from redis.commands.core import Script

    primary = sentinel_set.server_on(sentinel_set.current_primary_port())
    pool = redis.ConnectionPool(host="127.0.0.1", port=primary.port, max_connections=1)
    client = redis.Redis(connection_pool=pool)
    journal_server = server.Server(client, replicas=1, replica_timeout=SHORT_REPLICA_TIMEOUT)
    script = Script(client, "return redis.call('INCR', KEYS[1])")
    sentinel_set.replica.pause()
    try:
        client.set("noscript-test:dirty", 1)  # on the one connection, never replicated
        client.script_flush()
        waits = waits_on(client)
        with pytest.raises(NotReplicated) as raised:
            journal_server.run(script, ["noscript-test:n"], [], replicated=True, patient=patient)
        assert raised.value.reply == 1  # the script ran once, on its second try
        assert waits_on(client) == waits + (2 if patient else 1)
    finally:
        sentinel_set.replica.resume()
        client.delete("noscript-test:dirty", "noscript-test:n")
        pool.disconnect()


def test_replica_not_confirming__a_refused_write_is_still_refused(
    sentinel_set, journal_prefix, settings
):
    """An update of a row whose pending write deletes it queues nothing: it is refused
    as InvalidWrite whether or not a replica answers, never written "at once"."""
    on_journal(settings, sentinel_set.url())
    row = Counter.objects.create(name="gone")
    write_behind.delete(row)
    sentinel_set.replica.pause()
    try:
        row.hits = 4
        with pytest.raises(write_behind.InvalidWrite, match="deletes it"):
            write_behind.save(row, update_fields=["hits"])
    finally:
        sentinel_set.replica.resume()
    assert in_db(row.pk) == (0, "")
    write_behind.flush()
    assert in_db(row.pk) is None


def test_replica_not_confirming__a_drain_stops_after_its_unconfirmed_batch(
    sentinel_set, journal_prefix, settings
):
    on_journal(settings, sentinel_set.url(), BATCH_SIZE=2)
    rows = [Counter.objects.create(name=f"drain{i}") for i in range(4)]
    for row in rows:
        row.hits = 7
        assert write_behind.save(row)
    sentinel_set.replica.pause()
    try:
        with pytest.raises(NotReplicated):
            write_behind.flush()
        assert write_behind.stats()["pending"] == 2  # one batch written, then it stopped
    finally:
        sentinel_set.replica.resume()
    assert write_behind.flush() == 2
    assert [in_db(row.pk)[0] for row in rows] == [7, 7, 7, 7]


def test_primary_killed__no_save_that_returned_is_lost_and_saves_come_back(
    sentinel_set, journal_prefix, settings, capsys
):
    """Saves run before, while the replica is cut off (its primary acknowledges what it
    never receives), and across the primary's death and the failover. Every save
    returned (a version, or None: written at once), so each must be in the database
    after the flush; once a replica is back, saves go back to the journal by themselves.
    Without the WAIT the saves made while the replica was cut off would be lost with
    the primary (5 were, checked)."""
    on_journal(settings, sentinel_set.url(), REPLICA_TIMEOUT=SHORT_REPLICA_TIMEOUT)
    expected: dict[int, int] = {}
    queued = direct = 0

    def save_new_row() -> int | None:
        nonlocal queued, direct
        pk = 10_000 + len(expected)
        version = write_behind.save(Counter(pk=pk, name=f"f{pk}", hits=pk))
        expected[pk] = pk
        queued, direct = queued + (version is not None), direct + (version is None)
        return version

    for _ in range(20):
        save_new_row()
    primary, replica = sentinel_set.primary, sentinel_set.replica
    cut_off_replica(primary, replica)  # the replica has the 20; misses what follows
    for _ in range(5):
        save_new_row()  # the primary has them, the replica not: each must go to the database
    crash(primary)
    replica.resume()
    killed = time.monotonic()
    for _ in range(5):
        assert save_new_row() is None  # no primary: written at once
    sentinel_set.wait_for_failover(primary.port)
    # A replica comes back (the dead server restarted empty, as a replica of the
    # promoted one), and saves can be confirmed again. Never promoted itself: the
    # sentinels may call the promoted server down right after the switch (it was
    # frozen, its last answers are old), and a second failover would otherwise pick
    # this one before it has synced, losing the journal with it.
    returned = ReturningReplica(free_port(), primary.directory / "returned", replica)
    try:
        start_on_a_free_port(returned)
        deadline = killed + RECOVERY_BOUND
        while save_new_row() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        recovered = time.monotonic() - killed
        assert time.monotonic() < deadline, "saves did not go back to the journal"
        assert sentinel_set.current_primary_port() == replica.port
        for _ in range(20):
            save_new_row()  # queued, or written at once if the replica is slow: not lost
        sentinel_set.wait_until(lambda: _in_sync(returned), "the replica syncs", RECOVERY_BOUND)
        write_behind.flush()
    finally:
        returned.stop()
    found = dict(Counter.objects.filter(pk__in=expected).values_list("pk", "hits"))
    lost = sorted(set(expected) - set(found))
    with capsys.disabled():
        print(  # noqa: T201
            f"\n  write-behind, primary killed: {len(expected)} saves ({queued} queued, "
            f"{direct} written at once), {len(lost)} lost, journal again {recovered:.1f} s "
            f"after the kill"
        )
    assert lost == [] and found == expected
    assert write_behind.stats()["pending"] == 0


def _in_sync(server) -> bool:
    try:
        with server.client() as client:
            return client.info("replication").get("master_link_status") == "up"
    except redis.RedisError:
        return False


class ReturningReplica(ReplicaServer):
    """A server that joins as a replica and is never promoted (replica-priority 0)."""

    def command(self) -> list[str]:
        return [*super().command(), "--replica-priority", "0"]
