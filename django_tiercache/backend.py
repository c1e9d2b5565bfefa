"""TierCache: Django's cache API over partitions, with tags and failure handling.

The backend is a facade over the storage core (storage/): routing lives in
partitioning.py, bytes in codec.py, stores in stores/, what errors become in
failures.py, tag invalidation and fences in tags.py, reading and writing on
partitions in tier.py (the boundary an in-process tier will sit behind).

It imports no feature. Statistics, hot keys and whatever else watches a cache
are observers (storage/observers.py), built by the factories that
TIERCACHE["OBSERVERS"] names; every call to a partition goes through
``Partition.start``, which reports it to them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    MEMCACHE_MAX_KEY_LENGTH,
    BaseCache,
)
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from redis.exceptions import ConnectionError as RedisConnectionError

from . import conf
from .async_api import AsyncAPI
from .raw_clients import DjangoRedisClient
from .redis_compat import DjangoRedisAPI
from .storage import front, single_flight, timeouts
from .storage import options as options_module
from .storage.codec import Codec, Tampered
from .storage.failures import ErrorPolicy
from .storage.hooks import declare_lock_horizon
from .storage.observers import Building, combine, factories, watching_calls
from .storage.partition import Partition, fan_out
from .storage.partitioning import RendezvousPartitioner
from .storage.tags import Fencing, entry_tags, validate_tags
from .storage.tier import NOT_FOUND, PartitionedStorage, is_type_error
from .structures import StructuresAPI

_policies: dict[tuple, ErrorPolicy] = {}
_policies_lock = threading.Lock()
# Characters memcached refuses; Django warns about them for portability.
_UNPORTABLE = re.compile(r"[\x00-\x20\x7f]").search


class TierCache(AsyncAPI, PartitionedStorage, DjangoRedisAPI, StructuresAPI, BaseCache):  # type: ignore[misc]  # adelete_many returns the count, as delete_many
    """A Django cache backend over one or more Redis (or in-process) partitions.

    ``set``, ``add``, ``set_many`` and ``get_or_set`` take ``tags=``;
    ``invalidate_tags(*tags)`` hides every entry that carried any of them::

        cache.set("product:7", product, tags=["shop.product:7", "shop.product"])
        cache.invalidate_tags("shop.product:7")
        cache.get("product:7")  # None
    """

    def __new__(cls, location: Any = None, params: dict[str, Any] | None = None) -> Any:
        # Django's own cache checks build every cache before any check is shown,
        # so a cache with bad settings must build without raising: it is then a
        # MisconfiguredCache, the system checks report what is wrong (with an id
        # and a hint), and a process that skips them fails at the first call.
        cache = super().__new__(cls)
        if params is None:  # copy and pickle make instances without arguments
            return cache
        try:
            cache._build(location, params)
        except ImproperlyConfigured as exc:
            return MisconfiguredCache(params, str(exc))
        return cache

    def __init__(self, location: str | list[str], params: dict[str, Any]):
        """Nothing left to do: __new__ built the cache (see there)."""

    def _build(self, location: str | list[str], params: dict[str, Any]) -> None:
        super().__init__(params)
        config = options_module.parse(location, params.get("OPTIONS"))
        errors = [p for p in config.problems if p.is_error]
        if errors:
            raise ImproperlyConfigured(
                " ".join(f"tiercache.{p.id}: {p.msg} HINT: {p.hint}" for p in errors)
            )
        opts = {**config.options, **config.connection_options}
        ns = f"{self.key_prefix}:_tc:"
        self._partitions = [
            Partition(name, url, ns, opts)
            for name, url in zip(config.names, config.urls, strict=True)
        ]
        self._partitioner = RendezvousPartitioner(config.names)
        self._codec = Codec(config.options)
        self._close_connection = config["CLOSE_CONNECTION"]
        # {partition name: [replica URL]}: raw clients' reads only (raw_clients.py).
        self._read_replicas = config["READ_REPLICAS"]
        self._connection_options = opts
        self._replica_clients: dict[str, Any] = {}  # {URL: redis-py client}, made when asked
        # The async API runs natively where every partition can (async_api.py).
        self.native_async = config["WITNESS"] is None and all(
            p.store.native_async for p in self._partitions
        )
        self._policy = _policy_for((tuple(config.urls), self.key_prefix), config["RAISE_ERRORS"])
        self._fencing = Fencing(
            self._partitions,
            config["TAG_LEASE"],
            self._policy,
            raise_incomplete=config["INVALIDATION_FAILURE"] == "raise",
            witness=_witness(config["WITNESS"], self.key_prefix, config.options),
        )
        self._slot_of = {p: i for i, p in enumerate(self._partitions)}
        self._single_flight = options_module.single_flight_settings(config["SINGLE_FLIGHT"])
        for partition in self._partitions:
            partition.store.later_failed = _later_failed(self._policy, partition.name)
        l1_settings = options_module.l1_settings(config["L1"])
        if l1_settings:
            identity = (tuple(config.urls), self.key_prefix, config["SERIALIZER"])
            loads = self._codec.serializer.loads
            self._l1 = front.l1_for(identity, l1_settings, self._partitions, loads)
            if self._l1 is not None and self._l1.on_behind is None:
                self._l1.on_behind = _l1_behind(self._policy, self._partitions, self._l1)
                self._l1.on_malformed = _l1_malformed(self._policy, self._partitions)
        self._watch(
            Building(location, params, config, self.key_prefix, self._partitions, self._policy)
        )

    def _watch(self, building: Building) -> None:
        """Build the observers TIERCACHE["OBSERVERS"] names and report to them."""
        built = (factory(building) for factory in factories(conf.get_config()["OBSERVERS"]))
        self._observers = tuple(o for o in built if o is not None)
        self._observer = combine(self._observers)
        calls = watching_calls(self._observers)
        for partition in self._partitions:
            partition.observer = calls

    def get_backend_timeout(self, timeout: Any = DEFAULT_TIMEOUT) -> int | float | None:
        """The timeout in seconds from now, as Django's RedisCache gives it: None
        for forever, 0 for "not stored" (zero or negative). Unlike RedisCache,
        fractions of a second are kept, since partitions honour them.

        Raises TypeError or ValueError for a timeout no partition could honour.
        """
        value = timeouts.seconds(timeout, self.default_timeout)
        return None if value is None else max(0, value)

    def validate_key(self, key: str) -> None:
        # Django's check walks the key in Python; a regex finds the rare bad key
        # faster, and Django's own code then words the warning.
        if len(key) > MEMCACHE_MAX_KEY_LENGTH or _UNPORTABLE(key):
            super().validate_key(key)

    def partition_for(self, key: str, version: int | None = None) -> str:
        """The name of the partition that holds `key` (its URL, or its PARTITION_NAMES entry)."""
        return self._partition(self.make_and_validate_key(key, version=version)).name

    # -- Django's cache API --

    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        return self._read([key]).get(key, default)

    def get_many(self, keys: Iterable[str], version: int | None = None) -> dict[str, Any]:
        made = self._made_keys(keys, version)
        return {made[k]: v for k, v in self._read(list(made)).items()}

    def _made_keys(self, keys: Iterable[str], version: int | None) -> dict[str, str]:
        """{made key: key}: make_and_validate_key inlined, a tenth of a get_many's client CPU."""
        key_func, prefix = self.key_func, self.key_prefix
        version = self.version if version is None else version
        made = {key_func(k, prefix, version): k for k in keys}
        for key in made:
            if len(key) > MEMCACHE_MAX_KEY_LENGTH or _UNPORTABLE(key):
                super().validate_key(key)
        return made

    def has_key(self, key: str, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return key in self._read([key], "has_key")

    def set(  # type: ignore[override]
        self,
        key: str,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] = (),
        nx: bool = False,
    ) -> bool | None:  # a bool with nx=True, as in django-redis
        """Django's set(): None once stored; False when it was not (as add() says):
        a partition that failed, or refused a tagged entry for safety's sake (it
        may have missed write locks; counted as the event "refused").
        With ``nx=True`` (django-redis' add()) it returns whether it stored."""
        if nx:
            return self.add(key, value, timeout, version, tags)
        key = self.make_and_validate_key(key, version=version)
        stored = self._write({key: value}, timeout, tags)
        return None if key in stored or self._ttl_ms(timeout) == 0 else False

    def add(
        self,
        key: str,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] = (),
    ) -> bool:
        key = self.make_and_validate_key(key, version=version)
        if self._ttl_ms(timeout) == 0:
            # Nothing is stored; say whether it would have been, as Django's backends do.
            entry_tags(tags)
            self._codec.encode(key, value)
            return key not in self._read([key], "add")
        return key in self._write({key: value}, timeout, tags, nx=True, operation="add")

    def set_many(
        self,
        data: dict[str, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] = (),
    ) -> list[str]:
        """Set every item; return the keys that could not be stored (a partition failed)."""
        made = {self.make_and_validate_key(k, version=version): k for k in data}
        values = {m: data[k] for m, k in made.items()}
        stored = self._write(values, timeout, tags, operation="set_many")
        if self._ttl_ms(timeout) == 0:
            return []
        return [k for m, k in made.items() if m not in stored]

    def set_many_tagged(
        self,
        items: Mapping[str, tuple[Any, Iterable[str]]],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[str]:
        """set_many where each key has its own tags: ``{key: (value, tags)}``.

        Still one call per partition, however many different tags the items carry.
        Returns the keys that could not be stored (a partition failed).
        """
        made = {self.make_and_validate_key(k, version=version): k for k in items}
        values = {m: items[k][0] for m, k in made.items()}
        tags = {m: entry_tags(items[k][1]) for m, k in made.items()}
        stored = self._store(values, timeout, lambda m: (tags[m], None), False, "set_many")
        if self._ttl_ms(timeout) == 0:
            return []
        return [k for m, k in made.items() if m not in stored]

    def get_or_set(
        self,
        key: str,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        tags: Iterable[str] = (),
    ) -> Any:
        """Get `key`, or compute `default` (if callable), store it with `tags`, return it.

        The tag tokens are read before `default` is called; if any of the tags is
        invalidated while it runs, the value is returned but not stored, since it
        may have been computed from data the invalidation replaced.
        """
        made = self.make_and_validate_key(key, version=version)
        tags = entry_tags(tags)
        self._ttl_ms(timeout)  # a bad timeout fails every call, not only the misses
        found = self._read([made])
        if made in found:
            return found[made]
        if not callable(default):
            return self._load_and_store(
                made, default, timeout, tags, self._snapshot(made, tags, timeout)
            )
        early: list[Any] = []  # the snapshot, taken while the key's claim was on its way

        def snapshot_early(keys: list[str]) -> None:
            early.append(self._snapshot(made, tags, timeout))

        def load_and_store() -> Any:
            snapshot = early[0] if early else self._snapshot(made, tags, timeout)
            return self._load_and_store(made, default, timeout, tags, snapshot)

        # Many callers missing at once: one of them loads (storage/single_flight.py).
        return single_flight.load(self, made, load_and_store, self._read, snapshot_early)

    def _load_and_store(
        self, made: str, default: Any, timeout: Any, tags: tuple, snapshot: Any
    ) -> Any:
        """Compute `default` (taken after `snapshot` of its tags) and store it."""
        if callable(default):
            default = default()
        if snapshot is NOT_FOUND:
            return default
        if made in self._write(
            {made: default}, timeout, tags, nx=True, snapshot=snapshot, operation="get_or_set"
        ):
            return default
        return self._read([made]).get(made, default)

    def get_or_set_many(
        self,
        tags_by_key: Mapping[str, Iterable[str]],
        load: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> dict[str, Any]:
        """Cache-aside for many keys at once.

        Returns {key: value} for the keys found in the cache, plus what
        ``load(missing_keys)`` returns (a dict) for the others, which are stored
        under their own tags. As with get_or_set, tag tokens are read before
        `load` runs, so a value loaded across an invalidation is not stored.
        One round trip per partition for each step.
        """
        made = self._made_keys(tags_by_key, version)
        self._ttl_ms(timeout)  # a bad timeout fails every call, not only the misses
        found = self._read(list(made))
        result = {made[m]: v for m, v in found.items()}
        missing = [m for m in made if m not in found]
        if not missing:
            return result
        tags = {m: entry_tags(tags_by_key[made[m]]) for m in missing}
        # Snapshots taken while the keys' claims were on their way (single flight):
        # by key, and the keys asked (a partition that failed gave none).
        early: dict[str, Any] = {}
        asked: set[str] = set()

        def snapshot_early(keys: list[str]) -> None:
            early.update(self._snapshots({m: tags[m] for m in keys}, timeout))
            asked.update(keys)

        def load_and_store(keys: list[str]) -> dict[str, Any]:
            snapshots = {m: early[m] for m in keys if m in early}
            late = [m for m in keys if m not in asked]
            if late:
                snapshots.update(self._snapshots({m: tags[m] for m in late}, timeout))
            loaded = load([made[m] for m in keys])
            values = {m: loaded[made[m]] for m in keys if made[m] in loaded}
            storable = {m: v for m, v in values.items() if m in snapshots}
            self._store(storable, timeout, lambda m: (tags[m], snapshots[m]), True, "get_or_set")
            return values

        # Many callers missing the same keys: one loads each (storage/single_flight.py).
        values = single_flight.load_many(self, missing, load_and_store, self._read, snapshot_early)
        result.update({made[m]: v for m, v in values.items()})
        return result

    def touch(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        # A key holding a hash or set has its time to live set too (redis_compat).
        return self._touch(self.make_and_validate_key(key, version=version), self._ttl_ms(timeout))

    def delete(self, key: str, version: int | None = None) -> bool:
        return bool(self._delete([self.make_and_validate_key(key, version=version)]))

    def delete_many(self, keys: Iterable[str], version: int | None = None) -> int:  # type: ignore[override]
        """Delete `keys`; how many existed (as django-redis answers; Django's API says None)."""
        made = [self.make_and_validate_key(k, version=version) for k in keys]
        return self._delete(made) if made else 0

    def incr(
        self, key: str, delta: int = 1, version: int | None = None, ignore_key_check: bool = False
    ) -> int:
        """Add `delta` to an integer entry atomically; return the new value.

        Raises ValueError for a missing key (unless ``ignore_key_check=True``, as in
        django-redis: a missing key then starts at `delta` and never expires),
        TypeError for a value that is not an integer, and the partition's error (a
        ``redis.exceptions.RedisError``: ConnectionError, TimeoutError,
        PartitionUnavailable) when it cannot be reached, even with RAISE_ERRORS off.
        A silent miss is harmless for get(), but an unreachable counter reported as
        missing would be reset by the usual ``except ValueError: cache.set(key, 1)``,
        destroying its count.
        """
        made = self.make_and_validate_key(key, version=version)
        outcome = self._run(made, "incr", delta)
        if outcome.ok and outcome.value is None and ignore_key_check:
            if self.add(key, delta, None, version):
                return delta
            outcome = self._run(made, "incr", delta)  # another client created it meanwhile
        if not outcome.ok:
            if is_type_error(outcome.error):
                return self._incr_in_python(key, made, delta)
            raise outcome.error  # type: ignore[misc]
        if outcome.value is None:
            raise ValueError(f"Key '{key}' not found")
        return outcome.value

    def _incr_in_python(self, key: str, made: str, delta: int) -> int:
        """Past 64 bits Redis cannot add: do it here, as Django's locmem backend does.

        Not atomic, unlike the 64-bit case; the entry keeps its tags and its time left.
        """
        outcome = self._run(made, "entry")
        if not outcome.ok:
            raise outcome.error  # type: ignore[misc]
        if outcome.value is None:
            raise ValueError(f"Key '{key}' not found")
        body, pttl, tags = outcome.value
        try:
            value = self._codec.decode(made, body)
        except Tampered:
            raise ValueError(f"Key '{key}' not found") from None  # get() reads it as a miss
        if type(value) is not int:
            raise TypeError(f"The value of cache key {key!r} is not an integer.")
        ttl = None if pttl < 0 else max(pttl, 1) / 1000
        if made not in self._write({made: value + delta}, ttl, tags, operation="incr"):
            raise RedisConnectionError(
                f"The new value of cache key {key!r} could not be stored (its partition "
                f"failed, or a transaction holds one of its tags)."
            )
        return value + delta

    def incr_version(self, key: str, delta: int = 1, version: int | None = None) -> int:
        """Move an entry to another version, keeping its remaining time and its tags."""
        version = self.version if version is None else version
        old = self.make_and_validate_key(key, version=version)
        new = self.make_and_validate_key(key, version=version + delta)
        entry = self._run(old, "entry").value
        if entry is None:
            raise ValueError(f"Key '{key}' not found")
        body, pttl, tags = entry
        value = self._codec.decode(old, body)
        ttl = None if pttl < 0 else max(pttl, 1) / 1000
        snapshot = self._snapshot(new, tags, ttl)
        # Re-read after the snapshot: if the entry was invalidated in between, the
        # snapshot may postdate the invalidation and would not catch it.
        again = self._run(old, "entry").value if tags else entry
        if again is None or (again[0], again[2]) != (body, tags):
            raise ValueError(f"Key '{key}' changed or was invalidated while moving it")
        if snapshot is not NOT_FOUND:
            self._write({new: value}, ttl, tags, snapshot=snapshot, operation="incr_version")
        self._delete([old])
        return version + delta

    def clear(self) -> None:
        """Empty every partition (FLUSHDB, as Django's Redis backend does)."""
        outcomes = fan_out([(p, "clear", ()) for p in self._partitions])
        failures = [o for o in outcomes if not o.ok]
        if failures:
            # The flush also erased the fences kept for other partitions; a partition
            # that missed it must at least not serve its tagged entries as valid.
            self._fencing.fence([o.partition for o in failures])
        for outcome in failures:
            self._policy.failed("clear", outcome.partition.name, outcome.error)
        if self._l1 is not None:
            front.cleared(self)

    def close(self, **kwargs: Any) -> None:
        """Give back this instance's idle connections (Django calls it after each
        request, with the signal's arguments); with DJANGO_REDIS_CLOSE_CONNECTION
        (or OPTIONS["CLOSE_CONNECTION"]) on, close the pools' idle connections too."""
        self.client.close()

    def _close_connections(self) -> None:
        close_pools = self._close_connection
        if close_pools is None:
            close_pools = getattr(settings, "DJANGO_REDIS_CLOSE_CONNECTION", False)
        for partition in self._partitions:
            partition.store.close()
            if close_pools:
                partition.store.disconnect()
        if close_pools:
            for client in self._replica_clients.values():
                client.connection_pool.disconnect(inuse_connections=False)

    @property
    def client(self) -> DjangoRedisClient:
        """django-redis' ``cache.client``: raw clients, make_key, encode (raw_clients.py)."""
        client = self.__dict__.get("_client")
        if client is None:
            client = self.__dict__["_client"] = DjangoRedisClient(self)
        return client

    def invalidate_tags(self, *tags: str) -> None:
        """Invalidate every entry that carried any of `tags`, on every partition.

        Once this returns, no process is served such an entry, including from a
        partition that was unreachable meanwhile (see the README, "Tags").
        """
        tags = validate_tags(tags)
        if tags:
            self._observer.invalidated(tags)
            try:
                self._fencing.invalidate(tags)
            finally:
                if self._l1 is not None:
                    front.changed_tags(self, tags)

    def lock_tags(self, writer: str, tags: Iterable[str], seconds: float, wait: bool = True) -> Any:
        """Invalidate `tags` now and refuse cache fills under them until
        unlock_tags(writer, ...) or for `seconds` at most (by each server's clock).

        The model-invalidation layer locks the tags of the rows a transaction
        writes, so that nothing read before the commit is cached meanwhile. With
        wait=False the lock is sent and a callable returned that waits for it, so
        the round trip can overlap a database query. A lock that misses a
        partition fences it; if that cannot be done the callable raises
        InvalidationIncomplete (unless INVALIDATION_FAILURE is "log").
        """
        tags = validate_tags(tags)
        if not tags:
            return lambda: None
        self._observer.invalidated(tags)
        finish = self._fencing.start(tags, "lock", writer, int(seconds * 1000))
        finish = self._l1_after(finish, tags)
        if wait:
            finish()
        return finish

    def unlock_tags(self, writer: str, tags: Iterable[str], wait: bool = True) -> None:
        """Release `writer`'s locks on `tags` and invalidate them again.

        A partition this misses keeps the lock until it expires, which keeps
        fills out meanwhile: no fence is needed. For the same reason nobody needs
        the reply: with wait=False the release is sent and its reply read when
        the connection is next used (or given back at close()), so a write waits
        for no round trip. With an L1 tier the release is always awaited (the L1
        forgets the tags once Redis has).
        """
        tags = validate_tags(tags)
        if not tags:
            return
        if wait or self._l1 is not None:
            self._l1_after(self._fencing.start(tags, "unlock", writer, fence=False), tags)()
            return
        for partition in self._partitions:
            partition.send_later("unlock", tags, writer)

    def _l1_after(self, finish: Any, tags: tuple[str, ...]) -> Any:
        """finish(), then this process's L1 forgets the tags (once Redis has changed)."""
        if self._l1 is None:
            return finish

        def finish_and_forget() -> None:
            try:
                finish()
            finally:
                front.changed_tags(self, tags)

        return finish_and_forget


class MisconfiguredCache(BaseCache):
    """What CACHES holds for a TierCache whose settings are wrong (see TierCache.__new__).

    Every call raises ImproperlyConfigured with the message building it raised,
    which names the check id and its hint; close() does nothing, since Django
    closes every cache it built at the end of each request.
    """

    def __init__(self, params: dict[str, Any], message: str):
        # BaseCache.__init__ is not called: the params may be what is wrong.
        self.params, self.message = params, message

    def __repr__(self) -> str:
        return f"<MisconfiguredCache: {self.message}>"

    def close(self, **kwargs: Any) -> None:
        pass


def _refused(name: str) -> Any:
    def refused(self: MisconfiguredCache, *args: Any, **kwargs: Any) -> Any:
        raise ImproperlyConfigured(self.message)

    refused.__name__ = refused.__qualname__ = name
    return refused


for _name in dir(TierCache):
    if not _name.startswith("_") and _name != "close" and callable(getattr(TierCache, _name)):
        setattr(MisconfiguredCache, _name, _refused(_name))


def tier_cache(alias: str) -> TierCache:
    """caches[alias], which must be a TierCache (model invalidation and warming need tags)."""
    cache = caches[alias]
    if isinstance(cache, MisconfiguredCache):
        raise ImproperlyConfigured(cache.message)
    if not isinstance(cache, TierCache):
        raise ImproperlyConfigured(
            f"CACHES[{alias!r}] is a {type(cache).__name__}; django_tiercache's models and "
            f"warmers need BACKEND 'django_tiercache.backend.TierCache'."
        )
    return cache


def declare_write_locks(alias: str, seconds: float) -> None:
    """Write locks on CACHES[alias] last at most `seconds`.

    A partition that lost what locks it held (restart, eviction, flush) or
    missed some (it was unreachable) then refuses fills under tags for that
    long. Whoever takes locks declares it, in every process, at start-up (the
    model layer does, from TIERCACHE["WRITE_LOCK_TIMEOUT"]), before the cache
    is built: readers must know it too, since they are the ones who fill.
    """
    params = getattr(settings, "CACHES", {}).get(alias, {})
    if params.get("BACKEND") == "django_tiercache.backend.TierCache":
        declare_lock_horizon(f"{params.get('KEY_PREFIX', '')}:_tc:", seconds)


def _witness(path: str | None, key_prefix: str, options: dict[str, Any]) -> Any:
    """The cache's witness of last resort (OPTIONS["WITNESS"]), or None."""
    return None if path is None else import_string(path)(key_prefix, options)


def _l1_behind(policy: ErrorPolicy, partitions: list[Partition], l1: Any) -> Any:
    """What a cache's L1 does when a partition's channel fell behind: count it as
    the event "l1_behind" (statistics page, Prometheus) and log it."""

    def fell_behind(slot: int, seconds: float) -> None:
        name = partitions[slot].name
        policy.note(
            "l1_behind",
            name,
            "L1 copies of partition %s were not served for %.2f s: its channel was that "
            "late (MAX_LAG %.2f s; a process short of CPU, or a server slow to deliver)",
            name,
            seconds,
            l1.max_lag,
        )

    return fell_behind


def _l1_malformed(policy: ErrorPolicy, partitions: list[Partition]) -> Any:
    """Count a message on a partition's L1 channel this app never publishes as the
    event "l1_malformed" (logged once per burst); L1 stays on."""

    def malformed(slot: int, data: bytes) -> None:
        name = partitions[slot].name
        policy.note(
            "l1_malformed",
            name,
            "a message on the L1 channel of partition %s is not one this app publishes "
            "(%r...): ignored; someone with PUBLISH rights on that server sent it",
            name,
            data[:40],
        )

    return malformed


def _later_failed(policy: ErrorPolicy, partition: str) -> Any:
    """What a partition does with a command sent later (an unlock) that failed."""

    def note(error: BaseException) -> None:
        policy.note(
            "error:unlock", partition, "unlock of tags on partition %s failed: %s", partition, error
        )

    return note


def _policy_for(identity: tuple, raise_errors: bool) -> ErrorPolicy:
    """One policy (and so one set of counters) per cache per process."""
    with _policies_lock:
        policy = _policies.get(identity)
        if policy is None or policy.raise_errors != raise_errors:
            policy = _policies[identity] = ErrorPolicy(raise_errors)
        return policy
