"""A partition on a Redis server, through django-redis' connection pools."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django_redis.pool import get_connection_factory
from redis.exceptions import ResponseError

from . import lua
from .base import Store, Write


def _same(value: Any) -> Any:
    return value


def _missing_function(error: ResponseError) -> bool:
    # The server restarted (functions are not persisted here) or never had them.
    return "function not found" in str(error).lower()


class RedisCall:
    """One command sent on a pooled connection; the reply is read by result()."""

    __slots__ = ("_pool", "_conn", "_args", "_convert", "_error")

    def __init__(self, pool: Any, args: tuple, convert: Callable):
        self._pool, self._args, self._convert = pool, args, convert
        self._conn: Any = None
        self._error: BaseException | None = None
        try:
            self._conn = pool.get_connection()
            self._conn.send_command(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self._drop(exc)

    def _drop(self, exc: BaseException) -> None:
        # After a failure mid-reply the connection's state is unknown: never reuse it.
        if self._conn is not None:
            self._conn.disconnect()
            self._pool.release(self._conn)
            self._conn = None
        self._error = exc

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        conn = self._conn
        try:
            try:
                reply = conn.read_response()
            except ResponseError as error:
                if not _missing_function(error):
                    raise
                _load_library(conn)
                conn.send_command(*self._args)
                reply = conn.read_response()
        except ResponseError:  # an error reply leaves the connection in a clean state
            self._release()
            raise
        except BaseException as exc:
            self._drop(exc)
            raise
        self._release()
        return self._convert(reply)

    def _release(self) -> None:
        self._pool.release(self._conn)
        self._conn = None


def _load_library(conn: Any) -> None:
    conn.send_command("FUNCTION", "LOAD", lua.LIBRARY)
    try:
        conn.read_response()
    except ResponseError as error:
        if "already exists" not in str(error):  # another process loaded it first
            raise


class RedisStore(Store):
    def __init__(self, url: str, ns: str, options: dict[str, Any]):
        super().__init__(url, ns, options)
        factory = get_connection_factory(options=options)
        self.client = factory.connect(url)
        self.pool = self.client.connection_pool

    def _call(self, function: str | None, keys: list[str], args: list, convert=_same) -> RedisCall:
        if function is None:  # a plain command, e.g. ["DEL", key, ...]
            return RedisCall(self.pool, (*keys, *args), convert)
        name = lua.function_name(function)
        return RedisCall(self.pool, ("FCALL", name, len(keys), *keys, self.ns, *args), convert)

    def read(self, keys, leased):
        return self._call("read", keys, ["1" if leased else "0"], _read_reply)

    def write(self, writes: list[Write], nx, fresh):
        args: list[Any] = [fresh, "1" if nx else "0"]
        for w in writes:
            args += ["" if w.ttl_ms is None else w.ttl_ms, len(w.tags), *w.tags]
            args += ["1", *w.snapshot] if w.snapshot is not None else ["0"]
            args.append(w.body)
        return self._call("write", [w.key for w in writes], args, lambda r: [bool(x) for x in r])

    def delete(self, keys):
        return self._call(None, ["DEL", *keys], [])

    def touch(self, key, ttl_ms):
        return self._call("touch", [key], ["" if ttl_ms is None else ttl_ms], bool)

    def incr(self, key, delta):
        return self._call("incr", [key], [delta], lambda r: None if r is None else int(r))

    def entry(self, key):
        return self._call("entry", [key], [], _entry)

    def snapshot(self, tags, ttl_ms, fresh):
        return self._call(
            "SNAPSHOT",
            [],
            [fresh, "" if ttl_ms is None else ttl_ms, *tags],
            lambda r: tuple(t.decode() for t in r),
        )

    def drop_tags(self, tags):
        return self._call(None, ["DEL", *(f"{self.ns}t:{tag}" for tag in tags)], [])

    def lock(self, tags, writer, until_ms):
        return self._call("lock", [], [writer, until_ms, *tags])

    def unlock(self, tags, writer):
        return self._call("unlock", [], [writer, *tags])

    def record_fence(self, ids):
        return self._call(
            "RECORD_FENCE", [], ids, lambda r: [None if g is None else int(g) for g in r]
        )

    def check_fence(self, id_, deadline_ms):
        return self._call("check_fence", [], [id_, deadline_ms], int)

    def lease(self, deadline_ms, fenced):
        return self._call("lease", [], [deadline_ms, "1" if fenced else "0"])

    def clear_fence(self, id_, count):
        return self._call("clear_fence", [], [id_, count])

    def clear(self):
        return self._call(None, ["FLUSHDB"], [])

    def close(self):
        # Pools are shared by every thread's backend instance; keep them (as django-redis does).
        pass


def _read_reply(reply: list) -> tuple[int, list]:
    return reply[0], [_body(v) if type(v) is bytes and v[:1] == b"T" else v for v in reply[1:]]


def _body(value: bytes) -> bytes:
    """Cut the tag header ("T" <length> ":" <header>) off a tagged value."""
    colon = value.index(b":", 1)
    return value[colon + 1 + int(value[1:colon]) :]


def _entry(reply):
    if reply is None:
        return None
    body, pttl, *tags = reply
    return body, pttl, tuple(t.decode() for t in tags)
