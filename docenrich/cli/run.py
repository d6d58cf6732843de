"""`docenrich run`: the whole service in the foreground: Redis (unless REDIS_URL is set), the workers,
the web app.

The workers are a `models` worker (one process, the one model on the device) and a `docs`
worker (PDF extraction and storage, DOCS_CONCURRENCY processes), so the next batch of pages is
extracted while the model embeds this one; RUN_WORKERS=all starts a single worker for both.
The web app is served by gunicorn (docenrich.cli.gunicorn_conf).

Ctrl-C stops all of them: the web app first (finishing its requests), then the workers
(letting their tasks finish or go back to the queue), then Redis (which writes its
append-only file). SIGHUP to gunicorn's master (its pid is printed) reloads the web app gracefully.
"""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from docenrich.cli.locks import LockBusy, take_lock
from docenrich.cli.orphans import die_with_parent
from docenrich.cli.redis_server import RedisError, RedisServer, port_in_use
from docenrich.config import PROJECT_DIR, load_settings

log = logging.getLogger("docenrich.run")

# glibc's allocator for the web processes, unless the environment sets its own. Uploads are
# multi-megabyte buffers read by several threads: with the defaults, a freed buffer raises the mmap
# threshold to its size, so later ones come from per-thread arenas (up to eight per core) that
# fragment and are seldom given back, and a web process grows for hours. A fixed threshold keeps
# large buffers in their own mappings, returned on free; two arenas bound the rest. Not for the
# workers: torch allocates its activations above the threshold, and mapping them afresh for every
# call made the bundled model's encoding about 20% slower.
MALLOC_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072"}


def with_malloc_env(env: dict[str, str]) -> dict[str, str]:
    """env with MALLOC_ENV's settings added where it has none of its own."""
    return {**MALLOC_ENV, **env}

ENV_FILE = PROJECT_DIR / ".env"


def ensure_env_secret(name: str) -> str:
    """Return a secret from the environment or .env, generating it into .env on first run."""
    value = os.environ.get(name, "")
    if value:
        return value
    lines = ENV_FILE.read_text().splitlines() if ENV_FILE.exists() else []
    for line in lines:
        key, _, val = line.partition("=")
        if key.strip() == name and val.strip():
            return val.strip()
    value = secrets.token_urlsafe(24)
    with ENV_FILE.open("a") as fh:
        if lines and lines[-1].strip():
            fh.write("\n")
        fh.write(f"# generated on first run\n{name}={value}\n")
    os.chmod(ENV_FILE, 0o600)
    print(f"Generated {name} into {ENV_FILE}")
    return value


class PidFile:
    """One running instance per data directory (a lock file, see locks.py)."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = None

    def acquire(self) -> None:
        """Take the lock, or exit saying who holds it."""
        try:
            fh = take_lock(self.path)
        except LockBusy as busy:
            raise SystemExit(
                f"docenrich is already running (pid {busy.pid}, pid file {self.path}); stop it with Ctrl-C "
                f"or `kill {busy.pid}` first"
            ) from None
        self._fh = fh

    def release(self) -> None:
        """Drop the lock and remove the file."""
        if self._fh is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self._fh.close()
        self._fh = None


class Service:
    """The child processes of one run, stopped in reverse order."""

    def __init__(self):
        self.redis: RedisServer | None = None
        self.children: list[tuple[str, subprocess.Popen, float]] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str], grace: float = 10,
              on_orphan: int = signal.SIGQUIT) -> subprocess.Popen:
        """Start a child in its own process group; stop() gives it `grace` seconds after SIGTERM.
        Should this process die without stopping it (SIGKILL, the OOM killer), the child gets
        `on_orphan`: SIGQUIT is a quick shutdown for gunicorn and Celery alike."""
        proc = subprocess.Popen(argv, env=env, cwd=PROJECT_DIR, start_new_session=True,
                                preexec_fn=die_with_parent(on_orphan))
        self.children.append((name, proc, grace))
        return proc

    def dead_child(self) -> tuple[str, int] | None:
        """The name and exit code of a child (or Redis) that has exited, if any."""
        for name, proc, _ in self.children:
            if proc.poll() is not None:
                return name, proc.returncode
        if self.redis and self.redis.process and self.redis.process.poll() is not None:
            return "redis", self.redis.process.returncode
        return None

    def stop(self) -> None:
        """Stop the children in reverse order of start (web, workers), then Redis."""
        for name, proc, grace in reversed(self.children):
            if proc.poll() is None:
                print(f"Stopping {name} (pid {proc.pid})")
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
            # Pool children and gunicorn's workers share the group; make sure nothing is left behind.
            _signal_group(proc, signal.SIGKILL)
        if self.redis is not None:
            print("Stopping redis")
            self.redis.stop()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_http(url: str, timeout: float, service: Service) -> bool:
    """Poll url until it answers, a child dies, or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.dead_child():
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return True
        except Exception:
            time.sleep(0.5)
    return False


def start_redis(settings, service: Service, data_dir: Path, env: dict[str, str]) -> None:
    """Start a local Redis unless REDIS_URL names one, and point the children at it."""
    if settings.redis_url:
        print("Using the Redis at REDIS_URL (starting none)")
        if not urllib.parse.urlsplit(settings.redis_url).password:
            print("WARNING: REDIS_URL has no password. Anyone who can reach that Redis can send the workers "
                  "pickled tasks, which run code. Set one (requirepass) and put it in REDIS_URL.", file=sys.stderr)
        return
    password = settings.redis_password or ensure_env_secret("REDIS_PASSWORD")
    service.redis = RedisServer(data_dir / "redis", port=settings.redis_port, password=password,
                                host=settings.redis_host, maxmemory=settings.redis_maxmemory, pdeathsig=True)
    service.redis.start()
    env["REDIS_URL"] = service.redis.url
    print(f"Redis on {settings.redis_host}:{settings.redis_port} (password in .env, data in {data_dir / 'redis'})")
    # Only over the Redis started here: an external REDIS_URL may be reachable by others.
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not env.get("C_FORCE_ROOT"):
        print("WARNING: running as root. The worker accepts pickled messages; it is allowed to run as root here "
              "only because its Redis listens on 127.0.0.1 with a password. Run as an ordinary user in production.")
        env["C_FORCE_ROOT"] = "1"


def worker_commands(settings, host: str | None = None) -> list[tuple[str, list[str]]]:
    """(node name, argv) of the workers `make run` starts, as RUN_WORKERS says."""
    host = host or socket.gethostname()
    script = [sys.executable, "start_celery_worker.py"]
    if settings.run_workers == "all":
        return [(f"all@{host}", [*script, "--role", "all", "--name", f"all@{host}"])]
    if settings.run_workers != "split":
        raise SystemExit(f"RUN_WORKERS must be split or all, not {settings.run_workers!r}")
    return [
        (f"models@{host}", [*script, "--role", "models", "--name", f"models@{host}"]),
        (f"docs@{host}", [*script, "--role", "docs", "--concurrency", str(settings.docs_processes),
                          "--name", f"docs@{host}"]),
    ]


def start_workers(settings, service: Service, env: dict[str, str]) -> None:
    """Start the Celery workers, saying which."""
    for name, argv in worker_commands(settings):
        role = argv[argv.index("--role") + 1]
        concurrency = argv[argv.index("--concurrency") + 1] if "--concurrency" in argv else "1"
        print(f"Worker {name} (role {role}, concurrency {concurrency})")
        # Workers finish their current task on SIGTERM (a model task may take a while). Orphaned,
        # they are killed at once: their unfinished tasks come back through recovery, as after a power loss.
        service.spawn(f"{role} worker", argv, env, grace=30, on_orphan=signal.SIGKILL)


def web_argv() -> list[str]:
    """gunicorn serving the app with docenrich's configuration."""
    return [sys.executable, "-m", "gunicorn", "-c", "python:docenrich.cli.gunicorn_conf", "docenrich.web.wsgi:app"]


def supervise(service: Service, stopping) -> int:
    """Wait until a signal asks us to stop (0) or a child dies (1)."""
    while not stopping():
        dead = service.dead_child()
        if dead:
            name, code = dead
            print(f"{name} exited with code {code}; stopping everything", file=sys.stderr)
            return 1
        time.sleep(0.5)
    return 0


def _port_frees(host: str, port: int, timeout: float) -> bool:
    """True once nothing listens on the port; a web app an earlier run left may still be stopping."""
    deadline = time.monotonic() + timeout
    while port_in_use(host, port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def main(argv: list[str] | None = None) -> int:
    """`make run`: Redis, the workers and the web app in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-web", action="store_true", help="start Redis and the workers only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    settings = load_settings()
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if not args.no_web and not _port_frees(settings.web_host, settings.web_port, 15):
        raise SystemExit(
            f"port {settings.web_port} is already in use on {settings.web_host}: is docenrich already running? "
            f"Stop it, or set WEB_PORT to a free port."
        )
    pidfile = PidFile(data_dir / "docenrich.pid")
    pidfile.acquire()
    service = Service()
    env = dict(os.environ)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        start_redis(settings, service, data_dir, env)
        # Before gunicorn starts: its workers inherit one key, so a session made by one is valid in all.
        env.setdefault("SECRET_KEY", settings.secret_key or ensure_env_secret("SECRET_KEY"))
        start_workers(settings, service, env)
        if not args.no_web:
            web = service.spawn("web", web_argv(), with_malloc_env(env), grace=settings.web_graceful_timeout + 5)
            # SIGHUP to the master only: gunicorn's workers treat it as the default, a kill.
            print(f"Web: gunicorn (pid {web.pid}), {settings.web_workers} processes x {settings.web_threads} threads; "
                  f"`kill -HUP {web.pid}` reloads it gracefully")
            url = f"http://{settings.web_host}:{settings.web_port}/"
            if wait_http(url + "healthz", 120, service):
                print(f"\n  docenrich is running: {url}\n  Press Ctrl-C to stop.\n", flush=True)
        return supervise(service, lambda: bool(stop))
    except RedisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        service.stop()
        pidfile.release()
        print("Stopped.")


if __name__ == "__main__":
    sys.exit(main())
