"""Cache warming: warmers, warm_cache and its options, exit statuses, the Celery task.

Real Redis (the shared test database, or the throw-away servers when commands
are counted), real database, real RabbitMQ and Celery worker.
"""

from __future__ import annotations

import collections
import io
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import redis
from django.core.cache import caches
from django.core.management import CommandError, call_command

import django_tiercache
from django_tiercache import warming
from django_tiercache.backend import TierCache
from django_tiercache.orm.cache_aside import get_object, object_key
from tests.redis_servers import SHARED_REDIS_URL
from tests.testapp.models import Product
from tests.unseen_sql import unseen_sql

REPO_ROOT = Path(__file__).resolve().parent.parent
BROKER_URL = os.environ.get("TIERCACHE_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")


def tier(location, prefix, **options):
    return {
        "BACKEND": "django_tiercache.backend.TierCache",
        "LOCATION": location,
        "KEY_PREFIX": prefix,
        "OPTIONS": options,
    }


@pytest.fixture(autouse=True)
def _isolated(isolated_warmers):
    """Each test registers its own warmers; none outlives it (see conftest)."""


@pytest.fixture
def tier_caches(settings):
    """ "default" and "other": TierCaches on the shared test Redis, emptied afterwards."""
    prefix = f"w{uuid.uuid4().hex[:8]}"
    settings.CACHES = {
        "default": tier(SHARED_REDIS_URL, prefix),
        "other": tier(SHARED_REDIS_URL, f"{prefix}o"),
    }
    yield caches
    # clear(), which keeps every cache's lock and fence metadata in the database
    # (a raw FLUSHDB would make the next test's cache refuse fills), with a patient
    # socket timeout: a test may leave 200,000 entries to flush.
    patient = TierCache(SHARED_REDIS_URL, {"KEY_PREFIX": prefix, "OPTIONS": {"SOCKET_TIMEOUT": 30}})
    patient.clear()
    patient.close()


class FunctionCalls:
    """Counts the Redis Functions called on some servers, watching them with MONITOR.

    The greeting every connection starts with (``hello``) is left out: what is
    counted is the calls the code under test makes.
    """

    def __init__(self, servers):
        self.counts = collections.Counter()
        self.seen = threading.Event()
        self.watchers = [
            threading.Thread(target=self._watch, args=(s,), daemon=True) for s in servers
        ]
        self.clients = [s.client() for s in servers]
        self.ready = threading.Barrier(len(servers) + 1)
        for watcher in self.watchers:
            watcher.start()
        self.ready.wait(timeout=10)

    def _watch(self, server):
        with server.client(socket_timeout=30).monitor() as monitor:
            self.ready.wait(timeout=10)
            while True:
                command = monitor.next_command()["command"]
                if command.startswith("ECHO stop-watching"):
                    return
                if command.startswith("ECHO mark"):
                    self.seen.set()
                elif command.startswith("FCALL ") and not command.split()[1].endswith("_hello"):
                    self.counts[command.split()[1]] += 1

    def reset(self):
        """Forget what was counted so far (waiting until the servers' streams caught up)."""
        for client in self.clients:
            self.seen.clear()
            client.echo("mark")
            assert self.seen.wait(timeout=10)
        self.counts.clear()

    def total(self):
        """Stop watching; the number of function calls made."""
        for client in self.clients:
            client.echo("stop-watching")
        for watcher in self.watchers:
            watcher.join(timeout=10)
        return sum(self.counts.values())


@pytest.fixture
def isolated_cache(settings, clean_redis_servers):
    """A "default" TierCache over the four throw-away servers, for counting calls."""

    def configure(partitions=1):
        servers = clean_redis_servers[:partitions]
        location = [s.url for s in servers]
        settings.CACHES = {"default": tier(location, f"w{uuid.uuid4().hex[:8]}")}
        # Load the Redis Functions library on every partition before counting calls.
        caches["default"].get_many([f"warm-up:{i}" for i in range(64)])
        return FunctionCalls(servers)

    return configure


def fcalls(calls):
    return calls.total()


def warm(*args, **options):
    """Run warm_cache; returns (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("warm_cache", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def warm_fails(*args, **options):
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("warm_cache", *args, stdout=out, stderr=err, **options)
    return failure.value, out.getvalue(), err.getvalue()


def numbered(count, prefix="item", tags=()):
    for i in range(count):
        yield (f"{prefix}:{i}", {"n": i, "pad": "x" * 150}, tags) if tags else (f"{prefix}:{i}", i)


# -- warmers and the default write --


def test_warmer__writes_items_with_their_tags(tier_caches):
    @django_tiercache.warmer("products")
    def products():
        yield "p:1", "one", ["shop.product:1"]
        yield "p:2", "two", ["shop.product:2"]
        yield "plain", {"untagged": True}

    out, _ = warm("products")
    cache = tier_caches["default"]
    assert cache.get_many(["p:1", "p:2", "plain"]) == {
        "p:1": "one",
        "p:2": "two",
        "plain": {"untagged": True},
    }
    cache.invalidate_tags("shop.product:1")
    assert cache.get("p:1") is None and cache.get("p:2") == "two"
    assert "products" in out and "3 entries written." in out


def test_warmer__overwrites_cached_values_by_default(tier_caches):
    tier_caches["default"].set("item:0", "old")
    django_tiercache.warmer("items")(lambda: numbered(3))
    warm("items")
    assert tier_caches["default"].get("item:0") == 0


def test_warmer__returning_a_list_or_tuple_items_works(tier_caches):
    django_tiercache.warmer("listed")(lambda: [["a", 1], ("b", 2, ("t",))])
    warm("listed")
    assert tier_caches["default"].get_many(["a", "b"]) == {"a": 1, "b": 2}


def test_warmer__registering_another_function_under_a_taken_name_raises():
    django_tiercache.warmer("taken")(numbered)
    with pytest.raises(ValueError, match="already registered"):
        django_tiercache.warmer("taken")(warm)
    with pytest.raises(ValueError, match="without spaces"):
        django_tiercache.warmer("two words")


# -- batches, laziness, concurrency --


def test_batches__one_set_many_call_per_batch_on_one_partition(isolated_cache):
    clients = isolated_cache(partitions=1)
    django_tiercache.warmer("items")(lambda: numbered(1000))
    warm("items", "--batch-size", "100")
    assert fcalls(clients) == 10


def test_batches__set_many_is_grouped_per_partition(isolated_cache):
    clients = isolated_cache(partitions=4)
    django_tiercache.warmer("items")(lambda: numbered(1000))
    warm("items", "--batch-size", "250", "--concurrency", "1")
    # 4 batches of 250 keys, each spread over all 4 partitions: one call per partition.
    assert fcalls(clients) == 4 * 4
    assert len(caches["default"].get_many([f"item:{i}" for i in range(1000)])) == 1000


def test_batches__items_with_different_tags_still_go_in_one_call(isolated_cache):
    clients = isolated_cache(partitions=1)
    django_tiercache.warmer("mixed")(lambda: [("a", 1, ["x"]), ("b", 2, ["y"]), ("c", 3, ["x"])])
    warm("mixed")
    assert fcalls(clients) == 1


@pytest.mark.parametrize("concurrency", [1, 3])
def test_generator__is_consumed_lazily_batch_by_batch(tier_caches, concurrency):
    """With 200,000 items, writing starts before the generator is a few batches in."""
    cache, batch = tier_caches["default"], 1000
    in_flight = 2 * concurrency + 1  # batches the runner may hold at once
    seen_written_at = []

    def huge():
        for i in range(200_000):
            if i == in_flight * batch:
                # Starting the next batch needs a free slot: a written batch.
                firsts = [f"item:{b * batch}" for b in range(in_flight)]
                seen_written_at.append(bool(cache.get_many(firsts)))
            yield f"item:{i}", i

    django_tiercache.warmer("huge")(huge)
    out, _ = warm("huge", "--batch-size", str(batch), "--concurrency", str(concurrency))
    assert seen_written_at == [True]
    assert "200,000 entries written." in out
    assert cache.get_many(["item:0", "item:199999"]) == {"item:0": 0, "item:199999": 199999}


class _ThreadSpy:
    """Pickled in the thread that writes it: records which threads wrote."""

    threads: set[str] = set()

    def __reduce__(self):
        _ThreadSpy.threads.add(threading.current_thread().name)
        threading.Event().wait(0.02)  # keep this writer busy so that others take batches
        return (str, ("spy",))


@pytest.mark.parametrize(("concurrency", "writers"), [(1, 1), (4, 4)])
def test_concurrency__batches_are_written_from_that_many_threads(tier_caches, concurrency, writers):
    _ThreadSpy.threads = set()
    django_tiercache.warmer("spied")(lambda: ((f"s:{i}", _ThreadSpy()) for i in range(16)))
    warm("spied", "--batch-size", "1", "--concurrency", str(concurrency))
    assert len(_ThreadSpy.threads) == writers
    assert tier_caches["default"].get("s:15") == "spy"


# -- the options --


def test_only_missing__skips_cached_keys_with_one_multi_get_per_batch(isolated_cache):
    clients = isolated_cache(partitions=1)
    cache = caches["default"]
    cache.set_many({"item:0": "cached", "item:5": "cached"})
    clients.reset()
    django_tiercache.warmer("items")(lambda: numbered(10))
    out, _ = warm("items", "--only-missing", "--batch-size", "5")
    assert fcalls(clients) == 2 + 2  # per batch: one read, one write
    assert cache.get_many(["item:0", "item:5", "item:1"]) == {
        "item:0": "cached",
        "item:5": "cached",
        "item:1": 1,
    }
    row = next(line for line in out.splitlines() if line.startswith("items"))
    assert row.split()[2:6] == ["10", "8", "2", "0"]  # items warmed skipped failed


def test_dry_run__loads_and_counts_but_writes_nothing(tier_caches):
    django_tiercache.warmer("items")(lambda: numbered(25))
    out, _ = warm("items", "--dry-run", "--batch-size", "10")
    assert tier_caches["default"].get_many([f"item:{i}" for i in range(25)]) == {}
    assert "Dry run: 25 entries would be warmed; nothing was written." in out


def test_timeout__option_and_warmer_timeout_set_the_ttl(tier_caches):
    django_tiercache.warmer("short", timeout=50)(lambda: numbered(1, "short"))
    django_tiercache.warmer("plain")(lambda: numbered(1, "plain"))
    warm("short", "plain")
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    cache = tier_caches["default"]
    assert 45_000 < client.pttl(cache.make_key("short:0")) <= 50_000
    assert 295_000 < client.pttl(cache.make_key("plain:0")) <= 300_000  # the cache's TIMEOUT
    warm("short", "--timeout", "7.5")
    assert 7_000 < client.pttl(cache.make_key("short:0")) <= 7_500


def test_cache__warmer_alias_and_cache_option_choose_the_cache(tier_caches):
    django_tiercache.warmer("elsewhere", cache="other")(lambda: numbered(1, "e"))
    django_tiercache.warmer("here")(lambda: numbered(1, "h"))
    warm("elsewhere", "here")
    assert tier_caches["other"].get("e:0") == 0 and tier_caches["default"].get("e:0") is None
    assert tier_caches["default"].get("h:0") == 0 and tier_caches["other"].get("h:0") is None
    warm("here", "--cache", "other")
    assert tier_caches["other"].get("h:0") == 0


def test_all__runs_every_registered_warmer(tier_caches):
    django_tiercache.warmer("a")(lambda: numbered(1, "a"))
    django_tiercache.warmer("b")(lambda: numbered(1, "b"))
    warm("--all")
    assert tier_caches["default"].get_many(["a:0", "b:0"]) == {"a:0": 0, "b:0": 0}


@pytest.mark.django_db
def test_list__shows_warmers_and_registered_models(tier_caches):
    @django_tiercache.warmer("documented", cache="other")
    def documented():
        """Cards of the active products."""
        return []

    out, _ = warm("--list")
    assert "documented  (cache other; tests.test_warming." in out
    assert "Cards of the active products." in out
    assert "testapp.Product  (cache default)" in out
    assert tier_caches["default"].get("anything") is None


def test_progress__plain_lines_per_batch_at_verbosity_2(tier_caches):
    django_tiercache.warmer("items")(lambda: numbered(30))
    out, _ = warm("items", "--batch-size", "10", "--concurrency", "1", verbosity=2)
    assert "items: 10 items, 10 warmed, 0 skipped, 0 failed" in out
    assert "items: 30 items, 30 warmed, 0 skipped, 0 failed" in out


def test_progress__verbosity_0_prints_nothing(tier_caches):
    django_tiercache.warmer("items")(lambda: numbered(30))
    out, err = warm("items", "--batch-size", "10", verbosity=0)
    assert out == err == ""
    assert tier_caches["default"].get("item:29") == 29


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress__a_bar_on_a_terminal(tier_caches):
    pytest.importorskip("tqdm")
    django_tiercache.warmer("items")(lambda: numbered(30))
    out, err = io.StringIO(), _Terminal()
    call_command("warm_cache", "items", "--batch-size", "10", stdout=out, stderr=err)
    assert "\r" in err.getvalue() and "30 items" in err.getvalue()
    assert "items: 10 items" not in out.getvalue()  # no plain lines on a terminal


# -- failures and exit statuses --


def test_failures__bad_items_fail_alone_and_exit_status_is_1(tier_caches):
    @django_tiercache.warmer("mixed")
    def mixed():
        yield "good", 1
        yield ("only-a-key",)
        yield "unpicklable", threading.Lock()
        yield "also-good", 2
        yield "bad-tags", 3, "not-a-list"

    failure, out, err = warm_fails("mixed")
    assert failure.returncode == 1 and "3 items failed." in str(failure)
    assert tier_caches["default"].get_many(["good", "also-good", "unpicklable"]) == {
        "good": 1,
        "also-good": 2,
    }
    assert "'unpicklable'" in err and "only-a-key" in err


def test_failures__a_raising_warmer_does_not_stop_the_others(tier_caches):
    @django_tiercache.warmer("broken")
    def broken():
        yield "b:0", 0
        raise RuntimeError("database went away")

    django_tiercache.warmer("fine")(lambda: numbered(3, "fine"))
    failure, out, err = warm_fails("broken", "fine", "--batch-size", "1")
    assert failure.returncode == 1 and "1 warmer stopped by an error: broken." in str(failure)
    assert "broken stopped by an error after 1 item: RuntimeError: database went away" in err
    assert tier_caches["default"].get_many(["b:0", "fine:2"]) == {"b:0": 0, "fine:2": 2}


def test_failures__a_warmer_that_raises_keeps_what_it_yielded_before(tier_caches):
    @django_tiercache.warmer("half")
    def half():
        yield "h:0", 0
        yield "h:1", 1
        raise RuntimeError("the feed ended early")

    failure, out, err = warm_fails("half")  # one batch of 1000 would have held both
    assert tier_caches["default"].get_many(["h:0", "h:1"]) == {"h:0": 0, "h:1": 1}
    row = next(line for line in out.splitlines() if line.startswith("half"))
    assert row.split()[2:6] == ["2", "2", "0", "0"]
    assert "half stopped by an error after 2 items: RuntimeError: the feed ended early" in err
    assert str(failure) == "1 warmer stopped by an error: half."


def test_dry_run__says_would_warm_and_counts_in_whole_numbers(tier_caches):
    django_tiercache.warmer("many")(lambda: numbered(20_005, "many"))
    out, _ = warm("many", "--dry-run", "--concurrency", "1", verbosity=2)
    heading = next(line for line in out.splitlines() if line.startswith("warmer"))
    assert "would warm" in heading and "warmed" not in heading
    progress = [line for line in out.splitlines() if line.startswith("many:")]
    assert progress and all("would warm" in line and "e+" not in line for line in progress)
    assert "Dry run: 20,005 entries would be warmed; nothing was written." in out
    assert tier_caches["default"].get("many:0") is None


def test_progress_bar__shows_counts_as_integers(tier_caches):
    """tqdm writes numbers in three significant digits (20005 as 2e+4): the bar's
    counts are given to it as text."""
    import io

    pytest.importorskip("tqdm")
    from django.core.management.base import OutputWrapper

    from django_tiercache.management.commands.warm_cache import _BarProgress
    from django_tiercache.warming import Result

    stream = io.StringIO()
    bar = _BarProgress(OutputWrapper(stream))
    bar(Result("many", "default", items=20_005, warmed=20_005), True)
    assert "warmed 20,005" in stream.getvalue() and "e+" not in stream.getvalue()
    dry = io.StringIO()
    _BarProgress(OutputWrapper(dry), dry_run=True)(
        Result("many", "default", items=3, warmed=3), True
    )
    assert "would warm 3" in dry.getvalue()


def test_failures__items_on_a_dead_partition_are_failed(settings, clean_redis_servers):
    location = [clean_redis_servers[0].url, clean_redis_servers[1].url]
    settings.CACHES = {"default": tier(location, "dead", BREAKER_FAILURES=100)}
    clean_redis_servers[1].stop()
    django_tiercache.warmer("items")(lambda: numbered(50))
    failure, out, err = warm_fails("items")
    assert failure.returncode == 1
    cache = caches["default"]
    lost = sum(cache.partition_for(f"item:{i}") == location[1] for i in range(50))
    assert 0 < lost < 50 and f"{lost} items failed." in str(failure)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "known"], "Unknown warmer(s): nope. Registered warmers: known, stray."),
        (["known", "--cache", "nowhere"], "unknown cache alias 'nowhere'. Configured caches: "),
        (["stray"], "Warmer 'stray': unknown cache alias 'gone'. Configured caches: default"),
        (["--model", "testapp.Nope"], "--model 'testapp.Nope' is not a registered model."),
        (
            ["--model", "testapp.Unregistered"],
            "Registered models: auth.User, testapp.Badge, testapp.Book",
        ),
        (["--model", "testapp.Product", "--filter", "name"], "Bad --filter 'name'"),
        (
            ["--model", "testapp.Product", "--filter", "nope=1"],
            "Choices are: category, category_id, id, labels, name, version.",
        ),
        (["--model", "testapp.Product", "--filter", "version=x"], "expected a number"),
        (["known", "--filter", "name=x"], "--filter narrows --model"),
        (["known", "--all"], "Give warmer names or --all, not both."),
        ([], "Nothing to warm"),
        (["known", "--batch-size", "0"], "at least 1"),
        (["known", "--timeout", "-1"], "positive number of seconds"),
    ],
)
def test_bad_requests__exit_status_2_and_nothing_written(tier_caches, args, message):
    django_tiercache.warmer("known")(lambda: numbered(3, "known"))
    django_tiercache.warmer("stray", cache="gone")(lambda: numbered(3, "stray"))
    failure, out, err = warm_fails(*args)
    assert failure.returncode == 2
    assert message in str(failure)
    assert tier_caches["default"].get_many(["known:0", "stray:0"]) == {}


SUBPROCESS_SCRIPT = """
import sys
import django
django.setup()
import django_tiercache
from django.core.management import execute_from_command_line

@django_tiercache.warmer("fine")
def fine():
    yield "sub:fine", 1

@django_tiercache.warmer("broken")
def broken():
    yield "sub:broken", 1
    raise RuntimeError("broken on purpose")

execute_from_command_line(["manage.py", "warm_cache", *sys.argv[1:]])
"""


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["fine"], 0, "1 entry written."),
        (["fine", "broken"], 1, "stopped by an error: broken"),
        (["fine", "missing"], 2, "Unknown warmer(s): missing. Registered warmers: broken, fine."),
        (["fine", "--batch-size", "many"], 2, "invalid int value: 'many'"),
    ],
)
def test_exit_status__of_the_command_line(args, status, says):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO_ROOT)}
    env["TIERCACHE_TEST_REDIS_URL"] = SHARED_REDIS_URL
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", SUBPROCESS_SCRIPT, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == status, done.stderr
    assert says in done.stdout + done.stderr


# -- models --


@pytest.fixture
def products(transactional_db):
    """Committed rows: rows an open transaction wrote cannot be cached (their tags are locked)."""
    return [Product.objects.create(name=f"product-{i}", version=i) for i in range(12)]


def test_model__instances_are_cached_as_get_object_caches_them(
    tier_caches, products, django_assert_num_queries
):
    out, _ = warm("--model", "testapp.Product", "--batch-size", "5", "--concurrency", "1")
    assert "testapp.product" in out and "12 entries written." in out
    with django_assert_num_queries(0):
        assert get_object(Product, products[3].pk).name == "product-3"
    products[3].name = "renamed"
    products[3].save()  # model invalidation drops the warmed entry
    assert tier_caches["default"].get(object_key(Product, products[3].pk)) is None


def test_model__filter_narrows_the_rows(tier_caches, products):
    warm("--model", "testapp.Product", "--filter", "version__gte=10", "--concurrency", "1")
    cache = tier_caches["default"]
    cached = cache.get_many([object_key(Product, p.pk) for p in products])
    assert sorted(p.version for p in cached.values()) == [10, 11]


def test_model__cached_instances_are_kept_and_counted_as_skipped(tier_caches, products):
    get_object(Product, products[0].pk)  # cached through get_object
    table = Product._meta.db_table  # SQL Django never sees: no model invalidation
    unseen_sql(f"UPDATE {table} SET name = %s WHERE id = %s", ["raw", products[0].pk])  # noqa: S608
    out, _ = warm("--model", "testapp.Product", "--concurrency", "1")
    assert get_object(Product, products[0].pk).name == "product-0"
    row = next(line for line in out.splitlines() if line.startswith("testapp.product"))
    assert row.split()[2:6] == ["12", "11", "1", "0"]


def test_model__dry_run_loads_but_writes_nothing(tier_caches, products):
    out, _ = warm("--model", "testapp.Product", "--dry-run", "--concurrency", "1")
    assert "Dry run: 12 entries would be warmed; nothing was written." in out
    assert tier_caches["default"].get(object_key(Product, products[0].pk)) is None


def test_model__queryset_warmer_uses_the_registration_and_its_own_query(tier_caches, products):
    django_tiercache.warmer("cheap")(lambda: Product.objects.filter(version__lt=3))
    warm("cheap", "--concurrency", "1", "--timeout", "60")
    cache = tier_caches["default"]
    cached = cache.get_many([object_key(Product, p.pk) for p in products])
    assert sorted(p.version for p in cached.values()) == [0, 1, 2]
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    assert 55_000 < client.pttl(cache.make_key(object_key(Product, products[0].pk))) <= 60_000


def test_model__rows_an_open_transaction_wrote_are_not_cached_and_fail(tier_caches, db):
    made = Product.objects.create(name="uncommitted")  # the test's transaction never commits
    failure, out, err = warm_fails("--model", "testapp.Product", "--concurrency", "1")
    assert failure.returncode == 1 and "1 item failed." in str(failure)
    assert "not stored: its tags were invalidated or locked" in err
    assert tier_caches["default"].get(object_key(Product, made.pk)) is None


@pytest.mark.django_db(transaction=True)
def test_model__rows_load_in_worker_threads(tier_caches, django_assert_num_queries):
    made = [Product.objects.create(name=f"threaded-{i}") for i in range(40)]
    warm("--model", "testapp.Product", "--batch-size", "10", "--concurrency", "4")
    with django_assert_num_queries(0):
        assert [get_object(Product, p.pk).name for p in made] == [p.name for p in made]


# -- the Celery task --


@pytest.fixture(scope="module")
def celery_worker():
    celery = pytest.importorskip("celery")
    from celery.contrib.testing.worker import start_worker

    host, port = "127.0.0.1", 5672
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        pytest.skip(f"RabbitMQ is not answering on {host}:{port}: the Celery task is not tested")
    app = celery.Celery("tiercache-tests", broker=BROKER_URL, backend="rpc://", set_as_current=True)
    app.conf.task_default_queue = f"tiercache-tests-{uuid.uuid4().hex[:8]}"
    app.conf.broker_heartbeat = 0  # else the worker thread takes ~10 s to notice it must stop
    import django_tiercache.tasks  # noqa: F401 - registers the task with the app

    with start_worker(app, perform_ping_check=False, shutdown_timeout=10):
        yield app


def test_celery_task__runs_warmers_with_the_same_options(tier_caches, celery_worker):
    from django_tiercache.tasks import warm_cache

    tier_caches["default"].set("item:0", "cached")
    django_tiercache.warmer("items", cache="other")(lambda: numbered(20))
    django_tiercache.warmer("dry")(lambda: numbered(5, "dry"))
    outcome = warm_cache.delay(["items"], cache="default", only_missing=True, batch_size=5).get(
        timeout=30
    )
    assert outcome["ok"] is True and outcome["failed"] == 0
    (result,) = outcome["results"]
    assert (result["label"], result["alias"], result["items"]) == ("items", "default", 20)
    assert (result["warmed"], result["skipped"]) == (19, 1)
    assert tier_caches["default"].get_many(["item:0", "item:19"]) == {
        "item:0": "cached",
        "item:19": 19,
    }
    dry = warm_cache.delay(["dry"], dry_run=True).get(timeout=30)
    assert dry["results"][0]["warmed"] == 5 and tier_caches["default"].get("dry:0") is None


def test_celery_task__a_bad_request_fails_the_task_and_writes_nothing(tier_caches, celery_worker):
    from django_tiercache.tasks import warm_cache

    django_tiercache.warmer("items")(lambda: numbered(3))
    with pytest.raises(warming.WarmingError, match="Unknown warmer"):
        warm_cache.delay(["items", "unknown"]).get(timeout=30, propagate=True)
    assert tier_caches["default"].get("item:0") is None


def test_result__summaries_are_json_for_celery_results():
    result = warming.Result("x", "default", items=1, warmed=1, seconds=0.5)
    assert json.loads(json.dumps(result.as_dict()))["items_per_second"] == 2.0
