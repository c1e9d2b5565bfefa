"""Commands packed by hiredis itself (stores/redis.py send): the same bytes reach the
server as through redis-py's packer, and what hiredis refuses goes through redis-py."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import DataError

from django_tiercache.storage.stores.redis import hiredis_pack, send
from tests.redis_servers import SHARED_REDIS_URL


@pytest.fixture
def conn():
    pool = redis.ConnectionPool.from_url(SHARED_REDIS_URL)
    conn = pool.get_connection()
    yield conn
    pool.disconnect()


def roundtrip(conn, *args):
    send(conn, args)
    return conn.read_response()


@pytest.mark.skipif(hiredis_pack is None, reason="hiredis not installed")
def test_packed_by_hiredis__as_redis_py_packs_it(conn):
    args = ("SET", "clé:1", b"\x00\xff", "PX", 60_000)
    assert hiredis_pack(args) == b"".join(conn.pack_command(*args))
    assert roundtrip(conn, *args) == b"OK"
    assert roundtrip(conn, "GET", "clé:1") == b"\x00\xff"
    assert roundtrip(conn, "INCRBYFLOAT", "clé:2", 1.5) == b"1.5"
    assert roundtrip(conn, "DEL", "clé:1", "clé:2") == 2


def test_what_hiredis_refuses__goes_through_redis_py(conn):
    assert roundtrip(conn, "SET", "sending:view", memoryview(b"v")) == b"OK"
    assert roundtrip(conn, "GET", "sending:view") == b"v"
    assert roundtrip(conn, "DEL", "sending:view") == 1
    with pytest.raises(DataError):
        send(conn, ("SET", "sending:bool", True))
    assert roundtrip(conn, "EXISTS", "sending:bool") == 0
