"""Throw-away redis-server processes for the multi-partition benchmark runs.

Each server listens on a free loopback port, keeps nothing on disk, and is
terminated (then killed, if it lingers) when the context manager exits.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def free_port() -> int:
    # The port may in theory be taken again before redis binds it; on a
    # benchmark box that race is rare enough, and start() fails loudly if hit.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_ready(port: int, proc: subprocess.Popen) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {port} exited with {proc.returncode}")
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                if client.ping():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {port} not ready after {START_TIMEOUT_S}s")
    finally:
        client.close()


def _start(port: int, workdir: str) -> subprocess.Popen:
    cmd = [
        shutil.which("redis-server") or "redis-server",
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", workdir,
        "--loglevel", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_ready(port, proc)
    except BaseException:
        _stop(proc)
        raise
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def redis_servers(count: int) -> Iterator[list[int]]:
    """Start ``count`` redis-server processes and yield their ports."""
    started: dict[int, subprocess.Popen] = {}
    workdir = tempfile.mkdtemp(prefix="tiercache-bench-")
    try:
        for _ in range(count):
            port = free_port()
            started[port] = _start(port, workdir)
        yield list(started)
    finally:
        # The statistics publisher thread runs until the process exits: once the
        # servers are gone it would log its failure to reach them, which is noise here.
        logging.getLogger("django_tiercache").setLevel(logging.ERROR)
        for proc in started.values():
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
