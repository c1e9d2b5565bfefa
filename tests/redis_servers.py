"""Real redis-server processes for partition and failure tests.

The suite starts a few throw-away servers on free ports (no persistence, data
in a temporary directory) so that a test can stop, pause or restart one
without touching the shared Redis other tests and developers use.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

# The shared server: tests use one numbered database and flush only that one.
SHARED_REDIS_URL = os.environ.get("TIERCACHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

# Every server this process started, so a crash in a fixture cannot leak them.
_started: list[RedisServer] = []


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def closed_port_url() -> str:
    """A redis:// URL where no server listens: every connection is refused."""
    return f"redis://{HOST}:{free_port()}/0"


class RedisServer:
    """One redis-server child process bound to 127.0.0.1."""

    def __init__(self, port: int, directory: Path):
        self.port = port
        self.directory = directory
        self.process: subprocess.Popen | None = None
        self.paused = False

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("running" if self.running else "stopped")
        return f"<RedisServer {self.url} {state}>"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def logfile(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    @property
    def errfile(self) -> Path:
        return self.directory / f"redis-{self.port}.stderr"

    def command(self) -> list[str]:
        return [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.logfile),
        ]

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault("socket_timeout", 2.0)
        kwargs.setdefault("socket_connect_timeout", 1.0)
        return redis.Redis(host=HOST, port=self.port, db=0, **kwargs)

    def start(self) -> None:
        """Start (again) on the same port and return once it answers PING."""
        if self.running:
            self.resume()
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        # Startup errors (bad option, port taken) go to stderr before the logfile opens.
        with open(self.errfile, "ab") as err:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self.command(), stdout=subprocess.DEVNULL, stderr=err
            )
        self.paused = False
        if self not in _started:
            _started.append(self)
        self._wait_for_ping()

    def _wait_for_ping(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc().poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited: {self._log_tail()}")
            try:
                with self.client(socket_timeout=0.5, socket_connect_timeout=0.2) as client:
                    if client.ping():
                        return
            except redis.RedisError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"redis-server on port {self.port} did not answer PING "
            f"within {START_TIMEOUT}s: {self._log_tail()}"
        )

    def _proc(self) -> subprocess.Popen:
        if self.process is None:
            raise RuntimeError(f"redis-server on port {self.port} was never started")
        return self.process

    def _log_tail(self) -> str:
        parts = [
            path.read_text(errors="replace")[-2000:]
            for path in (self.errfile, self.logfile)
            if path.exists()
        ]
        return "\n".join(p for p in parts if p.strip()) or "(no output)"

    def stop(self) -> None:
        """Terminate the server and wait for it; kill it if it will not go."""
        if self.running:
            self.resume()  # a stopped (SIGSTOP) process would not act on SIGTERM
            process = self._proc()
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        self.paused = False

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections hang instead of failing."""
        os.kill(self._proc().pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.paused and self.running:
            os.kill(self._proc().pid, signal.SIGCONT)
        self.paused = False

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

    def ensure_running(self) -> None:
        self.resume()
        if not self.running:
            self.start()

    def ensure_clean(self) -> None:
        """Running, not paused, and empty: the state every test starts from."""
        self.resume()
        if not self.running:
            self.start()
        self.flush()


def start_servers(count: int, directory: Path) -> list[RedisServer]:
    """Start ``count`` servers on free ports; a port taken meanwhile is retried."""
    servers: list[RedisServer] = []
    try:
        for index in range(count):
            servers.append(_start_one(directory / f"server-{index}"))
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def _start_one(directory: Path, attempts: int = 3) -> RedisServer:
    for attempt in range(attempts):
        server = RedisServer(free_port(), directory)
        try:
            server.start()
            return server
        except RuntimeError:
            server.stop()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def stop_servers(servers: list[RedisServer]) -> None:
    for server in servers:
        server.stop()


def resume_all() -> None:
    """Resume every paused server, so that teardown never waits on a frozen one."""
    for server in _started:
        server.resume()


@atexit.register
def _stop_leftovers() -> None:
    stop_servers(_started)
