"""The journal: pending writes in Redis, on one designated server.

Dedicated keys with no TTL (see scripts.py for the layout), never ordinary cache
entries, so cache eviction under a volatile-* maxmemory-policy never drops a
pending write; under allkeys-* it could, which ``health()`` reports and the
``J:epoch`` key detects. Every change is one Lua script, so concurrent savers,
drainers and direct writers see each row in one consistent state.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from redis.commands.core import Script

from ..storage.hooks import keep_on_clear
from ..storage.options import parse as parse_cache_options
from . import rows, scripts, signing
from . import settings as wb_settings
from .server import JOURNAL_SCHEMES, NotReplicated, Server, connect, default_replicas, scheme

logger = logging.getLogger("django_tiercache.write_behind")

_journals_lock = threading.Lock()
_journals: dict[tuple[str, str, int, float, float, float], Journal] = {}
_seen_epochs: dict[str, bytes] = {}


@dataclass
class Claimed:
    """One row a drainer (or a direct writer) holds: its state at `version`.

    `row` and the field texts are as Redis holds them, decoded with
    surrogateescape so that bytes no codec takes still name the same keys
    (raw()); `problem` says why the row cannot be applied, if it cannot.
    """

    row: str
    version: str
    op: str  # "save", "update" or "delete"
    fields: dict[str, str]  # field attname -> signed JSON text
    op_mac: str = ""
    problem: str | None = None


def raw(row: str) -> bytes:
    """The row's name as Redis holds it."""
    return row.encode("utf-8", "surrogateescape")


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def _journal_keys() -> list[str]:
    """The journal's keys as a Redis glob: cache.clear() keeps them (pending writes
    are not cache content). The raw setting, not the validated one: clearing a
    cache must not fail because WRITE_BEHIND names a cache this project lacks."""
    prefix = str(wb_settings.configured()["KEY_PREFIX"])
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    return ["{" + escaped + "}:*"]


keep_on_clear(_journal_keys)


def journal_url(config: dict[str, Any]) -> str:
    """The journal's Redis: REDIS_URL, else the first Redis partition of CACHE (a plain
    Redis, a Sentinel-managed primary, or the cluster a redis+cluster:// cache is on)."""
    if config["REDIS_URL"]:
        return str(config["REDIS_URL"])
    cache: dict[str, Any] = django_settings.CACHES.get(config["CACHE"], {})
    urls = parse_cache_options(cache.get("LOCATION", ""), cache.get("OPTIONS")).urls
    for url in urls:
        if scheme(url) in JOURNAL_SCHEMES:
            return url.partition("#")[0]  # a cluster's slot group: the journal has its own slot
    raise ImproperlyConfigured(
        f"tiercache.E011: write-behind needs a Redis for its journal, and "
        f"CACHES[{config['CACHE']!r}] has no Redis partition (memory:// is one process's "
        f"memory and cannot hold it). HINT: set TIERCACHE['WRITE_BEHIND']['REDIS_URL'] to a "
        f"redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL, or "
        f"['CACHE'] to a cache on one of those."
    )


def replicas(config: dict[str, Any], url: str) -> int:
    """How many replicas must confirm an enqueue (REPLICAS; None: by the URL's kind)."""
    given = config["REPLICAS"]
    return default_replicas(url) if given is None else int(given)


class Journal:
    """The pending writes on one Redis, under one key prefix."""

    def __init__(self, server: Server, prefix: str):
        self.server = server
        self.base = "{" + prefix + "}"
        self.keys = {
            name: f"{self.base}:{name}"
            for name in (
                "state pending inflight owner since attempts errors dead seq counters epoch"
            ).split()
        }
        names = "ENQUEUE CLAIM CLAIM_ROWS CONFIRM ACK RELEASE FAIL RETRY_DEAD".split()
        self._scripts = {
            name: Script(server.scripting_client, getattr(scripts, name)) for name in names
        }

    @property
    def client(self) -> redis.Redis:
        """A client of the server that holds the journal now."""
        return self.server.client()

    def _run(
        self, name: str, keys: list, args: list, replicated: bool = False, patient=True
    ) -> Any:
        return self.server.run(self._scripts[name], keys, args, replicated, patient)

    def fields_key(self, row: str) -> bytes:
        return f"{self.base}:f:".encode() + raw(row)

    def _k(self, *names: str) -> list[str]:
        return [self.keys[name] for name in names]

    # -- writers --

    def enqueue(
        self,
        row: str,
        op: str,
        fields: dict[str, str],
        max_pending: int,
        expected: dict[str, str] | None = None,
    ) -> tuple[int, int]:
        """(version, rows pending); version -1: journal full, -2: update of a pending delete,
        -3: a field's stored text is no longer as `expected` (an increment raced another)."""
        keys: list[str | bytes] = [
            self.keys["state"],
            self.fields_key(row),
            *self._k("pending", "inflight", "since", "seq", "counters", "epoch"),
        ]
        expected = expected or {}
        flat: list[str] = [item for pair in fields.items() for item in pair]
        checks: list[str] = [item for pair in expected.items() for item in pair]
        macs = [signing.sign_op(row, op), signing.sign_op(row, "save")]
        # Replicated: a caller told "queued" must not lose it in a failover (server.py);
        # not patient: while replicas were missing lately, the save goes on at once.
        try:
            args = [row, op, max_pending, *macs, len(expected), *checks, *flat]
            reply = self._run("ENQUEUE", keys, args, replicated=True, patient=False)
        except NotReplicated as exc:
            if int(exc.reply[0]) >= 0:
                raise
            reply = exc.reply  # a refusal (-1, -2) queued nothing that a failover could lose
        version, count, *epoch = reply
        if epoch:
            self._check_epoch(epoch[0])
        return int(version), int(count)

    def stored(self, row: str, names: list[str]) -> dict[str, str]:
        """{field: stored text or ""} of a row's pending values (for an increment's retry)."""
        values: list = self.server.call(lambda c: c.hmget(self.fields_key(row), names))
        return {n: "" if v is None else _text(v) for n, v in zip(names, values, strict=True)}

    def latest(self, rows: list[str]) -> dict[str, tuple[str, dict[str, str]]]:
        """{row: (op, fields)} for the rows with pending state this site signed, in one
        round trip; a row it did not sign is left out (the drain quarantines it)."""

        def read(client: redis.Redis) -> list:
            pipe = client.pipeline(transaction=True)
            pipe.hmget(self.keys["state"], rows)
            for row in rows:
                pipe.hgetall(self.fields_key(row))
            return pipe.execute()

        states, *fields = self.server.call(read)
        found = {}
        for row, state, values in zip(rows, states, fields, strict=True):
            if state is None:
                continue
            _, op, mac = (_text(state).split("|", 2) + ["", ""])[:3]
            try:
                signing.check_op(row, op, mac)
            except signing.BadSignature:
                logger.warning("write-behind: pending state of %s is not signed; ignored", row)
                continue
            found[row] = (op, {_text(k): _text(v) for k, v in values.items()})
        return found

    def rows_of(self, model: Any) -> list[str]:
        """Every row of `model` with pending state (a scan: used before QuerySet.update())."""
        prefix = rows.label(model)
        match = prefix.replace("[", "\\[").replace("*", "\\*").replace("?", "\\?") + ":*"
        found = self.server.call(lambda c: list(c.hscan_iter(self.keys["state"], match=match)))
        return [_text(k) for k, _ in found]

    # -- drainers --

    def claim(self, token: str, limit: int, lease_seconds: float) -> list[Claimed]:
        reply = self._run(
            "CLAIM",
            self._k("pending", "inflight", "owner", "state", "dead", "since", "counters"),
            [token, limit, int(lease_seconds * 1000), f"{self.base}:f:"],
        )
        return [_claimed(item) for item in reply]

    def claim_rows(self, token: str, rows: list[str], lease_seconds: float) -> list[Claimed]:
        reply = self._run(
            "CLAIM_ROWS",
            self._k("pending", "inflight", "owner", "state", "dead", "since", "counters"),
            [token, int(lease_seconds * 1000), f"{self.base}:f:", *map(raw, rows)],
        )
        return [_claimed(item) for item in reply]

    def confirm(self, token: str, claimed: list[Claimed]) -> set[str]:
        args = [token, *(x for c in claimed for x in (raw(c.row), c.version))]
        return {_text(row) for row in self._run("CONFIRM", [self.keys["owner"]], args)}

    def ack(self, token: str, claimed: list[Claimed], replicated: bool = False) -> int:
        """The rows' states are in the database: drop them (unless written again since).

        With `replicated`, NotReplicated when the replicas did not confirm it (its
        `reply` is the count); see drain.py for why the drain waits and a direct
        write (mixed.py) does not.
        """
        if not claimed:
            return 0
        keys = self._k("state", "pending", "inflight", "owner", "since", "attempts", "errors")
        args = [token, f"{self.base}:f:", *(x for c in claimed for x in (raw(c.row), c.version))]
        return int(self._run("ACK", [*keys, self.keys["counters"]], args, replicated))

    def release(self, token: str, claimed: list[Claimed], delay_seconds: float = 0) -> None:
        if claimed:
            args: list[str | int | bytes] = [token, int(delay_seconds * 1000)]
            args += [x for c in claimed for x in (raw(c.row), c.version)]
            self._run("RELEASE", self._k("state", "pending", "inflight", "owner"), args)

    def fail(
        self,
        token: str,
        item: Claimed,
        error: str,
        backoff: float,
        max_retries: int,
        quarantined: bool = False,
    ) -> int:
        """Record a failed attempt: the attempts so far, 0 if it became a dead letter.

        MAX_RETRIES retries: the dead letter comes at attempt MAX_RETRIES + 1.
        """
        letter: dict[str, Any] = {
            "op": item.op,
            "op_mac": item.op_mac,
            "fields": item.fields,
            "error": error,
            "attempts": max_retries + 1,
        }
        if quarantined:
            letter["quarantined"] = True
        keys = self._k("state", "pending", "inflight", "owner", "since", "attempts", "errors")
        keys += self._k("dead", "counters")
        args: list[str | int | bytes] = [token, raw(item.row), item.version, error]
        args += [int(backoff * 1000), max_retries, json.dumps(letter), self.fields_key(item.row)]
        return int(self._run("FAIL", keys, args))

    def epoch(self) -> bytes:
        """The journal's epoch (written once; another value means the journal was lost)."""
        epoch = self.server.call(lambda c: c.get(self.keys["epoch"]))
        return epoch if isinstance(epoch, bytes) else b""

    # -- dead letters --

    def quarantine(self, token: str, item: Claimed) -> None:
        """A row this site cannot apply (not signed, unknown model, bad pk...): a dead
        letter at once, marked so that it is never retried."""
        self.fail(token, item, f"quarantined: {item.problem}", 0, 0, quarantined=True)

    def dead_letters(self) -> dict[str, dict[str, Any]]:
        """{row: letter}; whatever bytes a letter holds, it reads as a dict (an unreadable
        one as quarantined, with its bytes shown escaped)."""
        found: dict[bytes, bytes] = self.server.call(lambda c: c.hgetall(self.keys["dead"]))  # type: ignore[arg-type, return-value]
        return {_text(k): _letter(v) for k, v in sorted(found.items())}

    def retry_dead(self, rows: list[str] | None = None) -> int:
        """Queue dead letters again as what they were; quarantined ones stay."""
        rows = list(self.dead_letters()) if rows is None else rows
        if not rows:
            return 0
        keys = self._k("state", "pending", "since", "seq", "dead", "counters")
        return int(self._run("RETRY_DEAD", keys, [f"{self.base}:f:", *map(raw, rows)]))

    def drop_dead(self, rows: list[str] | None = None) -> int:
        rows = list(self.dead_letters()) if rows is None else rows
        if not rows:
            return 0
        return int(self.server.call(lambda c: c.hdel(self.keys["dead"], *map(raw, rows))))

    # -- figures --

    def stats(self) -> dict[str, Any]:
        figures = self.server.call(self._figures)
        pending, oldest, in_flight, retrying, dead, counters, this, last, now_ms = figures
        elapsed = 60 + (now_ms % 60000) / 1000
        counts = {k.decode(): int(v) for k, v in counters.items()}
        return {
            "pending": pending,
            "oldest_pending_age": (now_ms - oldest[0][1]) / 1000 if oldest else None,
            "in_flight": in_flight,
            "retrying": retrying,
            "dead_letters": dead,
            "written": counts.get("written", 0),
            "failed": counts.get("failed", 0),
            "queued": counts.get("queued", 0),
            "backpressure": counts.get("backpressure", 0),
            "journal_lost": counts.get("journal_lost", 0),
            "drain_rate": round((int(this or 0) + int(last or 0)) / elapsed, 2),
        }

    def _figures(self, client: redis.Redis) -> tuple:
        pipe = client.pipeline(transaction=True)
        pipe.hlen(self.keys["state"])
        pipe.zrange(self.keys["since"], 0, 0, withscores=True)
        pipe.zcard(self.keys["inflight"])
        pipe.hlen(self.keys["attempts"])
        pipe.hlen(self.keys["dead"])
        pipe.hgetall(self.keys["counters"])
        pipe.time()
        pending, oldest, in_flight, retrying, dead, counters, (sec, usec) = pipe.execute()
        now_ms = sec * 1000 + usec // 1000
        minute = now_ms // 60000
        this, last = client.mget(
            [f"{self.keys['counters']}:minute:{m}" for m in (minute, minute - 1)]
        )
        return pending, oldest, in_flight, retrying, dead, counters, this, last, now_ms

    def count(self, name: str, by: int = 1) -> None:
        self.server.call(lambda c: c.hincrby(self.keys["counters"], name, by))

    def health(self) -> dict[str, Any]:
        """The server settings the journal's guarantees depend on (see the README)."""
        client = self.client
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
        appendonly = client.config_get("appendonly").get("appendonly")
        fsync = client.config_get("appendfsync").get("appendfsync")
        return {
            "maxmemory_policy": policy,
            "appendonly": appendonly,
            "appendfsync": fsync,
            "evictable": str(policy).startswith("allkeys"),
        }

    def _check_epoch(self, epoch: bytes) -> None:
        """Log once if the journal's epoch key changed: Redis lost the journal."""
        seen = _seen_epochs.setdefault(self.base, epoch or b"")
        if epoch != seen:
            logger.error(
                "write-behind journal %s was lost and started again (Redis restarted without "
                "persistence, was flushed, or evicted it): pending writes may be gone",
                self.base,
            )
            self.count("journal_lost")
            _seen_epochs[self.base] = epoch or b""


def _claimed(item: list) -> Claimed:
    row, version, op, flat, *mac = item
    fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
    claimed = Claimed(_text(row), _text(version), _text(op), fields, _text(mac[0]) if mac else "")
    claimed.problem = _problem(claimed, [row, op, *flat, *mac])
    return claimed


def _problem(item: Claimed, parts: list[bytes]) -> str | None:
    """Why a claimed row cannot be applied, or None: bytes, model, pk, signatures, values."""
    try:
        for part in parts:
            part.decode("utf-8")
        model, _ = rows.parse_row(item.row)
        if item.op not in ("save", "update", "delete"):
            raise rows.BadRow(f"{item.op!r} is not an operation")
        signing.check_op(item.row, item.op, item.op_mac)
        rows.decode(model, item.row, item.fields)
    except UnicodeDecodeError:
        return "its bytes are not UTF-8 text, so this site did not write them"
    except (rows.BadRow, signing.BadSignature) as exc:
        return str(exc)
    return None


def _letter(value: bytes) -> dict[str, Any]:
    try:
        letter = json.loads(value.decode("utf-8"))
        if isinstance(letter, dict) and isinstance(letter.get("fields", {}), dict):
            letter.setdefault("op", "unknown")
            letter.setdefault("fields", {})
            letter.setdefault("error", "")
            return letter
    except (UnicodeDecodeError, ValueError):
        pass
    return {
        "op": "unknown",
        "fields": {},
        "error": f"unreadable dead letter (not written by this site): {value[:120]!r}",
        "attempts": 0,
        "quarantined": True,
    }


def get_journal() -> Journal:
    """The journal the settings name, with one client per process and location."""
    config = wb_settings.get()
    url = journal_url(config)
    key = (
        url,
        config["KEY_PREFIX"],
        replicas(config, url),
        float(config["REPLICA_TIMEOUT"]),
        float(config["SOCKET_TIMEOUT"]),
        float(config["BREAKER_COOLDOWN"]),
    )
    with _journals_lock:
        journal = _journals.get(key)
        if journal is None:
            server = connect(url, "{" + key[1] + "}", *key[2:])
            journal = _journals[key] = Journal(server, key[1])
    return journal
