"""Shared plumbing of the benchmarks: environment, Redis / worker / web processes, timing,
statistics, corpus snippets; results, tables and memory readings live in `bench.report`.

Importing this module has no side effects (a benchmark worker imports `bench.bench_models`
through `--include`, which imports this). `setup_environment()` must run before any project
module is imported: it imports `tests.conftest`, which sets the test environment (bundled
all-MiniLM-L6-v2 embedder, seeded cross-encoder reranker, CPU, a private Redis URL and data dir).
"""
from __future__ import annotations

import argparse
import atexit
import functools
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from bench.report import (  # noqa: F401  (re-exported: the benchmarks use common.X)
    Figure,
    Row,
    Target,
    fmt,
    machine_info,
    machine_line,
    ms,
    process_memory,
    ratio,
    save_json,
    secs,
    table,
)
from bench.worker_logs import LogWindow, LogWindows  # noqa: F401  (re-exported)

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "bench" / "out"
CACHE_DIR = OUT_DIR / "cache"
CORPUS = (ROOT / ".." / "shared" / "corpus" / "wild-pdfs").resolve()
BUNDLED_EMBEDDER = "bundled:all-MiniLM-L6-v2"
PROBE_MODULE = "bench.bench_models"  # loaded into benchmark workers for the probe tasks

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- environment


def ensure_import_path() -> None:
    """Make the project root importable (for `bench.*`, `tests.*` and the project modules)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


_conftest = None


def conftest():
    """tests.conftest, imported once; its import sets TEST_ENV in os.environ."""
    global _conftest
    if _conftest is None:
        ensure_import_path()
        import tests.conftest as module

        _conftest = module
        # conftest removes its session directory in a pytest hook; outside pytest we do.
        atexit.register(shutil.rmtree, module.SESSION_DIR, True)
    return _conftest


def setup_environment() -> Any:
    """Set the benchmark environment (before any project import), import the model libraries the way
    the worker does (same environment, e.g. OpenMP settings, for the in-process baselines) and build
    the reranker checkpoint."""
    module = conftest()
    from docenrich import models

    models.import_model_libraries()
    module.build_reranker_checkpoint(module.RERANKER_DIR)
    return module


def data_dir() -> Path:
    return Path(os.environ["DATA_DIR"])


# --------------------------------------------------------------------------- timing and statistics


def timed(fn: Callable[..., Any], *args, **kwargs) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def summarize(values: Iterable[float]) -> dict[str, float]:
    """n, p50, p95, mean, min and max of a sample."""
    data = list(values)
    if not data:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "mean": float("nan"), "min": float("nan"),
                "max": float("nan")}
    return {"n": len(data), "p50": percentile(data, 50), "p95": percentile(data, 95), "mean": statistics.fmean(data),
            "min": min(data), "max": max(data)}


def interleave(methods: dict[str, Callable[[], Any]], rounds: int, cpu: Callable[[], float] | None = None,
               budget_s: float | None = None, min_rounds: int = 3) -> dict[str, list[float]]:
    """Seconds per call of every method, run in turn within each round (order rotated per round)
    so that machine noise hits all of them alike. With `cpu` (a CPU-seconds counter), the CPU
    time of each call is recorded too, under "<name>:cpu". With `budget_s`, no new round starts
    once that much time has passed and `min_rounds` are done (keeps a loaded machine in budget)."""
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    if cpu is not None:
        times.update({f"{name}:cpu": [] for name in names})
    started = time.perf_counter()
    for r in range(max(1, rounds)):
        if budget_s is not None and r >= min_rounds and time.perf_counter() - started > budget_s:
            log.info("time budget of %gs spent after %d rounds", budget_s, r)
            break
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            before = cpu() if cpu is not None else 0.0
            seconds, _ = timed(methods[name])
            times[name].append(seconds)
            if cpu is not None:
                times[f"{name}:cpu"].append(cpu() - before)
            log.debug("round %d %s: %.3fs", r + 1, name, seconds)
    return times


def cpu_counter(*pids: int) -> Callable[[], float]:
    """A function returning the CPU seconds (user + system, all threads) used so far by the given
    processes and their descendants, exited ones included (a recycled pool child's time moves into
    its parent's children_* counters): the cost of work regardless of how busy the machine is."""
    import psutil

    def total() -> float:
        seconds = 0.0
        for pid in pids:
            try:
                root = psutil.Process(pid)
                procs = (root, *root.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
            for proc in procs:
                try:
                    t = proc.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                seconds += t.user + t.system + (t.children_user + t.children_system if proc is not root else 0.0)
        return seconds

    return total


def system_cpu() -> Callable[[], float]:
    """CPU seconds of this process and everything it started (Redis, workers, web app)."""
    return cpu_counter(os.getpid())


def paired_speedups(times: dict[str, list[float]], method: str, baseline: str) -> list[float]:
    """Per round, throughput of `method` relative to `baseline` (baseline seconds / method seconds):
    the two ran back to back in the same round, so slow drifts in machine load cancel out."""
    return [b / m for m, b in zip(times[method], times[baseline])]


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll predicate until truthy (the tests' helper); TimeoutError after timeout seconds."""
    return conftest().wait_for(predicate, timeout, interval, what)


# --------------------------------------------------------------------------- processes


def _kill_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process group of a child we started, SIGKILL if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class WebProcess:
    """The web app on a free port, talking to the benchmark's Redis and data dir: `python app.py`
    (Flask's development server), or with gunicorn=True the gunicorn `make run` starts."""

    def __init__(self, log_path: Path, env: dict[str, str] | None = None, gunicorn: bool = False):
        from docenrich.cli.redis_server import free_port

        self.port = free_port()
        self.log_path = log_path
        # No query cache: the benchmark cycles through a few queries, and each search is measured
        # as a new question (its embedding included).
        self.env = {**os.environ, "WEB_PORT": str(self.port), "WEB_HOST": "127.0.0.1", "SECRET_KEY": "bench",
                    "API_TOKEN": "", "QUERY_CACHE_SIZE": "0", **(env or {})}
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self._session = None
        self.argv = ([sys.executable, "-m", "gunicorn", "-c", "python:docenrich.cli.gunicorn_conf",
                      "docenrich.web.wsgi:app"] if gunicorn else [sys.executable, str(ROOT / "app.py")])

    def start(self, timeout: float = 120.0) -> WebProcess:
        import requests

        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env,
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._session = requests.Session()

        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"the web app exited with {self.process.returncode}; see {self.log_path}")
            try:
                return self._session.get(self.url + "/healthz", timeout=5).status_code in (200, 503)
            except requests.RequestException:
                return False

        wait_for(answers, timeout, 0.3, "the web app to answer /healthz")
        return self

    def get(self, path: str, **params) -> tuple[float, Any]:
        """(seconds, json) of a GET; raises on an HTTP error."""
        seconds, response = timed(self._session.get, self.url + path, params=params, timeout=300)
        response.raise_for_status()
        return seconds, response.json()

    def upload(self, path: Path) -> dict:
        """POST one PDF to /api/documents; the created (or existing) document's JSON."""
        with path.open("rb") as fh:
            response = self._session.post(self.url + "/api/documents", files={"file": (path.name, fh, "application/pdf")},
                                          timeout=300)
        response.raise_for_status()
        return response.json()["documents"][0]

    def delete(self, doc_id: str) -> None:
        self._session.delete(f"{self.url}/api/documents/{doc_id}", timeout=60)

    def memory(self) -> dict[str, float]:
        return process_memory(self.process.pid)

    def stop(self) -> None:
        if self.process is not None:
            _kill_group(self.process)
            self.process = None


class BenchEnv:
    """One Redis for the whole run, plus workers and web apps; everything started is stopped on exit."""

    def __init__(self):
        self.conftest = setup_environment()
        self.redis = None
        self._workers: dict[str, Any] = {}
        self._webs: list[WebProcess] = []
        self._apps: dict[int, Any] = {}
        self.log_dir = OUT_DIR / "logs"

    def __enter__(self) -> BenchEnv:
        from docenrich.cli.redis_server import RedisServer

        c = self.conftest
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(c.SESSION_DIR / "redis", port=c.REDIS_PORT, password=c.REDIS_PASSWORD).start()
        return self

    def __exit__(self, *exc) -> None:
        for web in self._webs:
            web.stop()
        for name in list(self._workers):
            self.stop_worker(name)
        if self.redis is not None:
            self.redis.stop()

    @property
    def app(self):
        from celery_config import celery_app

        return celery_app

    def redis_url(self, db: int = 0) -> str:
        return f"{self.redis.url.rsplit('/', 1)[0]}/{db}"

    def worker(self, name: str = "main", args: list[str] | None = None, db: int = 0, fresh: bool = False,
               env: dict[str, str] | None = None):
        """A started worker subprocess (all queues, concurrency 1) with the benchmark probes loaded;
        reused by name unless fresh. A worker on db != 0 has its own queues (use `app_for(db)`)."""
        if fresh:
            self.stop_worker(name)
        if name not in self._workers:
            c = self.conftest
            env = {"REDIS_URL": self.redis_url(db), **(env or {})}
            proc = c.WorkerProcess(name, env=env, args=[f"--include={PROBE_MODULE}", *(args or [])])
            start, _ = timed(proc.start, self.app_for(db), 180.0)
            proc.start_seconds = start
            log.info("worker %s up in %.1fs", name, start)
            self._workers[name] = proc
        return self._workers[name]

    def run_workers(self):
        """The workers `make run` starts: a model worker and a docs worker (the all-role one stopped)."""
        self.stop_worker("main")
        docs = self.worker("docs", ["--role=docs"])
        return self.worker("models", ["--role=models"]), docs

    def stop_worker(self, name: str) -> None:
        proc = self._workers.pop(name, None)
        if proc is not None:
            self.keep_log(proc)
            proc.stop()

    def keep_log(self, proc) -> None:
        """Copy a worker's log out of the session directory (which is removed at exit)."""
        if proc.log_path.exists():
            shutil.copy(proc.log_path, self.log_dir / proc.log_path.name)

    def app_for(self, db: int):
        """The Celery app talking to Redis database `db` (0 is the project's own app)."""
        if db == 0:
            return self.app
        if db not in self._apps:
            from celery_config import make_celery
            from docenrich.config import load_settings

            self._apps[db] = make_celery(load_settings(redis_url=self.redis_url(db)))
        return self._apps[db]

    def web(self, gunicorn: bool = False, **env: str) -> WebProcess:
        """The web app (started on first use, then shared), with `env` on top of the benchmark's settings."""
        if not self._webs:
            self._webs.append(WebProcess(self.log_dir / "web.log", env=env or None, gunicorn=gunicorn).start())
        return self._webs[0]

    def purge(self, db: int = 0) -> None:
        self.app_for(db).control.purge()


# --------------------------------------------------------------------------- corpus


def corpus_pdfs() -> list[Path]:
    """Every PDF of the shared corpus, sorted."""
    return sorted(CORPUS.rglob("*.pdf"))


def generated_pdf(pages: int) -> Path:
    """An N-page text PDF from the extraction benchmark's generator, cached under bench/out/cache."""
    from bench import bench_extract

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"generated-{pages}.pdf"
    if not path.exists():
        made = bench_extract.generate_pdf(pages, CACHE_DIR)
        if made != path:
            made.rename(path)
    return path


def page_batches(path: Path, doc_id: str | None = None) -> list[list]:
    """A PDF's snippets grouped exactly as the pipeline sends them to enrich_snippets_task
    (one list per SNIPPET_BATCH_PAGES page range, with the pipeline's settings); [] if unreadable."""
    from docenrich.config import get_settings
    from docenrich.models.tokens import embedder_counter
    from docenrich.pdf import PDFError, iter_snippet_batches

    s = get_settings()
    counter = embedder_counter(s)
    try:
        return [b for b in iter_snippet_batches(path, doc_id, batch_pages=s.snippet_batch_pages,
                                                target_tokens=s.snippet_target_tokens,
                                                overlap_tokens=s.snippet_overlap_tokens,
                                                image_max_px=s.snippet_image_max_px, count_tokens=counter,
                                                max_tokens=counter.max_tokens if counter else None) if b]
    except PDFError:
        return []


@functools.lru_cache(maxsize=1)
def _corpus_per_document() -> tuple[list[list], ...]:
    """Pipeline batches of every readable corpus document, extracted once per process."""
    return tuple(b for b in (page_batches(p) for p in corpus_pdfs()) if b)


def corpus_batches(max_snippets: int | None = None) -> list[list]:
    """Pipeline batches of the corpus, taken round-robin across documents (so a subset mixes
    small documents and the long one) until max_snippets."""
    per_doc = _corpus_per_document()
    out: list[list] = []
    total = 0
    depth = 0
    while any(depth < len(b) for b in per_doc):
        for batches in per_doc:
            if depth < len(batches):
                if max_snippets is not None and total >= max_snippets:
                    return out
                out.append(batches[depth])
                total += len(batches[depth])
        depth += 1
    return out


def embedding_texts(batches: list[list]) -> list[list[str]]:
    """The strings the worker embeds for each snippet (heading + text), per batch."""
    from docenrich.records import embedding_text

    return [[embedding_text(s) for s in batch] for batch in batches]


# --------------------------------------------------------------------------- command line


@dataclass
class Options:
    quick: bool = False

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full


def cli(run: Callable[[BenchEnv, Options], list[Figure]], description: str, argv: list[str] | None = None) -> int:
    """Standalone entry point of one benchmark module: runs it and prints its tables."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with BenchEnv() as env:
        figures = run(env, Options(quick=args.quick))
    line = machine_line(machine_info())
    for figure in figures:
        print(figure.markdown(line))
        print()
    return 0
