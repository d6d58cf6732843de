"""make soak: the service under steady load for SOAK_MINUTES (default 30) → bench/SOAK.md, bench/soak.png.

The load, on the embedded default (SQLite, the bundled model), through the web app and the workers
`make run` starts (a models worker and a docs worker): a corpus PDF uploaded every UPLOAD_SECONDS,
searches at SEARCHES_PER_SECOND (each a new question), every finished document deleted a while after
it is ready, and one `docenrich reembed` at half time. Every minute it records Redis' used_memory
and key count, the RSS and open file descriptors of every process (the mean of 5-second samples),
the SQLite WAL size, that minute's search p50/p95, the 5xx count, and the documents not in a
terminal state.

A series is flat when its least-squares slope after the warm-up (the first third) is within 2% of
its mean per 10 minutes. This is a benchmark, not a test: it reports, it does not fail.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench.report import machine_info, machine_line  # noqa: E402
from docenrich.cli.run import with_malloc_env  # noqa: E402

log = logging.getLogger("bench.soak")

REPORT = common.ROOT / "bench" / "SOAK.md"
PLOT = common.ROOT / "bench" / "soak.png"
UPLOAD_SECONDS = 20  # about: the uploads of one pass over the corpus take a whole number of minutes
SEARCHES_PER_SECOND = 1.0
DELETE_AFTER = 120  # seconds a document stays after it is ready
FLAT = 2.0  # % of the mean per 10 minutes
# Small corpus PDFs that end ready (no encrypted, empty or 117-page one): the load is steady.
SKIP = ("005-", "009-", "017-")
# A document that stays for the whole run, ready before the first minute: a service holds a corpus
# while uploads and deletes come and go, and with it every search reranks a full candidate list
# rather than whatever the churn left in the store at that moment.
RESIDENT = "009-pdflatex-geotopo"
SERIES = ("redis_used_kib", "redis_keys", "rss_web", "rss_models", "rss_docs", "rss_redis", "fds", "wal_kib",
          "search_p50_ms", "search_p95_ms", "errors_5xx", "unfinished")
# A model child is replaced every MAX_TASKS_PER_CHILD tasks (a minute or two at one search a second),
# and a docs child's RSS follows the PDF it works on: a worker's RSS is a sawtooth, and so are the open
# files (a new child opens its connections again, and Redis counts them too). Their trend is read
# from the median of each pass over the corpus (a leak lifts every sample; a reload dip or one PDF does not).
SAWTOOTH = ("rss_models", "rss_docs", "fds")
# One minute's percentile comes from 60 searches (its p95 is the third slowest), and each swings with
# the uploads being embedded at that moment: the trend of the percentiles is read from each 5
# minutes' searches pooled (300 answers). The table still shows every minute's own value.
POOLED = {"search_p50_ms": 50, "search_p95_ms": 95}
ROWS = common.OUT_DIR / "soak-rows.json"


@dataclass
class Load:
    """What the load threads did, shared with the recorder (guarded by lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: list[float] = field(default_factory=list)  # this minute's search seconds
    errors: int = 0  # 5xx answers, all minutes
    searches: int = 0
    uploads: int = 0
    deletes: int = 0
    live: dict[str, float] = field(default_factory=dict)  # doc id -> when it was seen ready (0: not yet)
    reembed: str = "not run"
    resident: str = ""
    upload_seconds: float = UPLOAD_SECONDS
    cycle_minutes: int = 5  # one pass over the corpus PDFs: the period of the load
    rss: list[dict[str, tuple[float, int]]] = field(default_factory=list)  # this minute's 5 s samples


def process_loop(env, web, load: Load, stop: threading.Event) -> None:
    """RSS and open files of every part every 5 s: a minute's row is their mean, not one instant."""
    while not stop.wait(5.0):
        try:
            parts = {name: _rss_and_fds(pids) for name, pids in _processes(env, web).items()}
        except Exception as exc:  # noqa: BLE001 - a process replaced between listing and reading
            log.debug("process sample skipped: %s", exc)
            continue
        with load.lock:
            load.rss.append(parts)


def search_loop(web, load: Load, stop: threading.Event) -> None:
    """Searches at a fixed rate, each a question not asked before."""
    import requests

    i, began = 0, time.monotonic()
    # A fixed schedule: a slow answer delays the next question, it does not lower the rate after it.
    while not stop.wait(max(0.0, began + i / SEARCHES_PER_SECOND - time.monotonic())):
        i += 1
        started = time.perf_counter()
        try:
            response = web._session.get(web.url + "/api/search",
                                        params={"q": f"question {i} about the harbour and its {i % 97} ships", "k": 5},
                                        timeout=120)
            status = response.status_code
        except requests.RequestException:
            status = 599
        with load.lock:
            load.searches += 1
            load.latencies.append(time.perf_counter() - started)
            load.errors += status >= 500


def soak_pdfs() -> list[Path]:
    """The corpus PDFs uploaded in turn."""
    return [p for p in common.corpus_pdfs() if not p.parent.name.startswith(SKIP)]


def add_resident(web) -> tuple[str, int]:
    """Upload the resident document and wait until it is ready: (its name, its snippet count)."""
    path = next(p for p in common.corpus_pdfs() if p.parent.name == RESIDENT)
    doc_id = web.upload(path)["id"]

    def ready() -> dict | None:
        _, doc = web.get(f"/api/documents/{doc_id}")
        if doc["state"] == "failed":
            raise RuntimeError(f"the resident document failed: {doc['error']}")
        return doc if doc["state"] == "ready" else None

    doc = common.wait_for(ready, 1800, 2.0, "the resident document to be ready")
    return path.name, int(doc["snippet_count"])


def upload_plan(count: int) -> tuple[float, int]:
    """(seconds between uploads, minutes per pass over `count` PDFs): about UPLOAD_SECONDS apart, so
    that a pass, the period of the load, takes a whole number of minutes."""
    cycle = max(1, round(count * UPLOAD_SECONDS / 60))
    return cycle * 60 / count, cycle


def upload_loop(web, load: Load, stop: threading.Event) -> None:
    """The corpus PDFs in turn, one every load.upload_seconds; documents ready for DELETE_AFTER seconds are deleted."""
    pdfs = soak_pdfs()
    i = 0
    while not stop.wait(load.upload_seconds):
        try:
            doc = web.upload(pdfs[i % len(pdfs)])
            i += 1
            with load.lock:
                load.uploads += 1
                load.live.setdefault(doc["id"], 0.0)
            _delete_old(web, load)
        except Exception as exc:  # noqa: BLE001 - a refused upload is reported, the load goes on
            log.warning("upload failed: %s", exc)


def _delete_old(web, load: Load) -> None:
    now = time.monotonic()
    for doc_id, ready_at in list(load.live.items()):
        if not ready_at:
            _, doc = web.get(f"/api/documents/{doc_id}")
            if doc["state"] in ("ready", "failed"):
                load.live[doc_id] = now
        elif now - ready_at > DELETE_AFTER:
            web.delete(doc_id)
            with load.lock:
                load.deletes += 1
                del load.live[doc_id]


def run_reembed(env, load: Load) -> None:
    """One `docenrich reembed` through the command line, as an operator would run it."""
    cmd = [sys.executable, "-m", "flask", "--app", "app", "docenrich", "reembed"]
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=common.ROOT, env={**os.environ, "REDIS_URL": env.redis_url()},
                          capture_output=True, text=True, timeout=1800)
    load.reembed = f"exit {done.returncode} after {time.monotonic() - started:.0f} s"


def _processes(env, web) -> dict[str, list[int]]:
    """Pids of every process of the service, by part: the web app, each worker with its pool, Redis."""
    import psutil

    out = {"redis": [env.redis.process.pid]}
    for name, pid in (("web", web.process.pid), ("models", env.worker("models").process.pid),
                      ("docs", env.worker("docs").process.pid)):
        root = psutil.Process(pid)
        out[name] = [root.pid, *(c.pid for c in root.children(recursive=True))]
    return out


def _rss_and_fds(pids: list[int]) -> tuple[float, int]:
    rss = fds = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return rss / 1024, fds


def _keys_by_family(client) -> dict[str, int]:
    """How many of Redis' keys each documented family (docenrich/keys.py) has now."""
    from collections import Counter

    from docenrich.keys import family_of

    families = (family_of(key.decode(errors="replace")) for key in client.scan_iter(count=1000))
    return dict(Counter(f.pattern if f else "(undocumented)" for f in families))


def sample(env, web, load: Load, minute: int) -> dict:
    """One minute's row of the table."""
    import redis

    client = redis.Redis.from_url(env.redis_url())
    info = client.info("memory")
    wal = common.data_dir() / "docenrich.sqlite3-wal"
    with load.lock:
        lat, load.latencies = sorted(load.latencies), []
        errors, searches = load.errors, load.searches
        samples, load.rss = load.rss, []
    samples = samples or [{name: _rss_and_fds(pids) for name, pids in _processes(env, web).items()}]
    parts = {name: (sum(s[name][0] for s in samples) / len(samples), sum(s[name][1] for s in samples) / len(samples))
             for name in samples[0]}
    store = _store()
    row = {
        "minute": minute,
        "redis_used_kib": info["used_memory"] / 1024,
        "redis_keys": client.dbsize(),
        "rss_mib": sum(rss for rss, _ in parts.values()),
        "fds": sum(fds for _, fds in parts.values()),
        "wal_kib": wal.stat().st_size / 1024 if wal.exists() else 0.0,
        "search_p50_ms": 1000 * common.percentile(lat, 50) if lat else 0.0,
        "search_p95_ms": 1000 * common.percentile(lat, 95) if lat else 0.0,
        "errors_5xx": errors,
        "unfinished": len(store.unfinished_documents()),
        "searches": searches,
        "latencies_ms": [round(1000 * x, 1) for x in lat],
        "keys_by_family": _keys_by_family(client),
        **{f"rss_{name}": rss for name, (rss, _) in parts.items()},
        **{f"fds_{name}": fds for name, (_, fds) in parts.items()},
    }
    log.info("minute %d: %s", minute, {k: round(v, 1) for k, v in row.items() if isinstance(v, int | float)})
    return row


_STORE = None


def _store():
    global _STORE
    if _STORE is None:
        from docenrich.storage import SQLiteStore

        _STORE = SQLiteStore(common.data_dir())
    return _STORE


def _points(rows: list[dict], key: str, cycle: int = 5) -> tuple[list[float], list[float]]:
    """(minutes, values) after the warm-up; a sawtooth series as its median, and a search percentile
    over the searches, of the `cycle` minutes (one pass over the corpus) ending at each minute."""
    tail = rows[len(rows) // 3:]
    if key in POOLED and all("latencies_ms" in r for r in tail) and len(tail) >= cycle:
        ends = range(cycle, len(tail) + 1)
        return ([tail[end - 1]["minute"] for end in ends],
                [common.percentile(sorted(ms for r in tail[end - cycle:end] for ms in r["latencies_ms"]), POOLED[key])
                 for end in ends])
    if key not in SAWTOOTH:
        return [r["minute"] for r in tail], [r[key] for r in tail]
    # The median of the last pass at every minute: a whole period of the load in each point, so the
    # PDF in work and a model reload weigh the same in every one, while a leak lifts them all.
    ends = range(min(cycle, len(tail)), len(tail) + 1)
    return ([tail[end - 1]["minute"] for end in ends],
            [sorted(r[key] for r in tail[end - cycle:end])[len(tail[end - cycle:end]) // 2] if end >= cycle
             else tail[end - 1][key] for end in ends])


def slope(rows: list[dict], key: str, cycle: int = 5) -> tuple[float, float]:
    """Least-squares slope after the warm-up: (per 10 minutes, the same in % of the series' mean)."""
    import numpy as np

    x, y = _points(rows, key, cycle)
    if len(x) < 3:
        return 0.0, 0.0
    per10 = float(np.polyfit(np.array(x, float), np.array(y, float), 1)[0]) * 10
    mean = float(np.mean(y))
    return per10, (per10 / mean * 100 if mean else 0.0)


def verdict(rows: list[dict], key: str, cycle: int = 5) -> str:
    """flat within FLAT %; "falls" below it; "grows" above it. A count that is mostly zero (5xx,
    unfinished documents) is judged by its absolute slope: at most one per 10 minutes."""
    per10, percent = slope(rows, key, cycle)
    _, values = _points(rows, key, cycle)
    if values and sum(values) / len(values) < 1:
        return "flat" if abs(per10) <= 1 else ("falls" if per10 < 0 else "grows")
    return "flat" if abs(percent) <= FLAT else ("falls" if percent < 0 else "grows")


def plot(rows: list[dict]) -> None:
    """One small chart per series, against minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 4, figsize=(16, 9))
    minutes = [r["minute"] for r in rows]
    for ax, key in zip(axes.flat, SERIES, strict=True):
        ax.plot(minutes, [r[key] for r in rows], marker=".")
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("minute")
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=80)


def report(rows: list[dict], load: Load, minutes: int, stuck: int, seconds: float) -> str:
    """bench/SOAK.md: the conditions, the verdict per series, and the minute table."""
    lines = [
        "# Soak", "",
        f"Generated by `make soak` (bench/soak.py, SOAK_MINUTES={minutes}) in {seconds / 60:.0f} min on "
        f"{machine_line(machine_info())}.", "",
        f"Load: one resident document ({load.resident or 'none'}) ready before the first minute and kept, "
        f"the other corpus PDFs uploaded in turn, one every {load.upload_seconds:.1f} s ({load.uploads} uploads; a pass "
        f"over the corpus takes {load.cycle_minutes} min), "
        f"{SEARCHES_PER_SECOND:g} search/s ({load.searches} searches, each a new question), every document "
        f"deleted {DELETE_AFTER} s after it was ready ({load.deletes} deletes), and one `docenrich reembed` at "
        f"half time ({load.reembed}). Embedded default: SQLite, the bundled model, a models worker and a "
        "docs worker and gunicorn as `make run` starts them (gunicorn with its allocator settings, "
        "`MALLOC_ARENA_MAX=2` and a fixed 128 KiB `MALLOC_MMAP_THRESHOLD_`).", "",
        f"A series is flat when its least-squares slope after the warm-up (the first third) is within "
        f"{FLAT:g}% of its mean per 10 minutes; a count that is mostly zero, when it is within one per 10 "
        "minutes. RSS and open files are each minute's mean of 5-second samples. The models and docs workers' RSS is a sawtooth (a pool child is replaced every "
        "MAX_TASKS_PER_CHILD tasks and loads its model again; a docs child's follows the PDF it works on): "
        f"their trend, and that of the open files, is read from their median over the last {load.cycle_minutes} minutes "
        "(one pass over the corpus) at every minute after the warm-up. A search's time follows the "
        "document being embedded meanwhile, so the percentiles rise and fall with each pass over the corpus: their trend is "
        f"read from the searches of the last {load.cycle_minutes} minutes (one pass) pooled at every minute after the "
        "warm-up (a minute's own p95 is its third slowest of 60).", "",
        "| series | first | last | slope per 10 min | % of mean | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for key in SERIES:
        per10, percent = slope(rows, key, load.cycle_minutes)
        lines.append(f"| {key} | {rows[0][key]:.1f} | {rows[-1][key]:.1f} | {per10:+.1f} | {percent:+.1f} | "
                     f"{verdict(rows, key, load.cycle_minutes)} |")
    lines += ["", f"Documents not in a terminal state once the load stopped and the queue drained: **{stuck}**. "
              f"5xx answers: **{load.errors}**.", "", *_by_part(rows), "![the series per minute](soak.png)", "",
              "| minute | " + " | ".join(SERIES) + " | rss, all |",
              "|" + "---:|" * (len(SERIES) + 2)]
    for r in rows:
        values = [r["minute"], *(r[k] for k in SERIES), r["rss_mib"]]
        lines.append("| " + " | ".join(f"{v:.0f}" if isinstance(v, float) else str(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def _by_part(rows: list[dict]) -> list[str]:
    """Open files per part and keys per family, first and last minute (what the totals are made of)."""
    parts = [k for k in rows[0] if k.startswith("fds_")]
    if not parts:
        return []
    first, last = rows[0].get("keys_by_family", {}), rows[-1].get("keys_by_family", {})
    families = sorted(set(first) | set(last), key=lambda f: -last.get(f, 0))
    return ["Open files by part, first → last minute: " + ", ".join(
        f"{k[4:]} {rows[0][k]:.0f} → {rows[-1][k]:.0f}" for k in parts) + ".", "",
        "Redis keys by family, first → last minute: " + ", ".join(
        f"`{f}` {first.get(f, 0)} → {last.get(f, 0)}" for f in families) + ".", ""]


def drain(load: Load, timeout: float = 600) -> int:
    """Wait for the documents still in work to finish; how many did not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = len(_store().unfinished_documents())
        if not left:
            return 0
        time.sleep(2)
    return len(_store().unfinished_documents())


def write(minutes: int) -> None:
    """bench/SOAK.md and the plot from the rows the last run saved."""
    saved = json.loads(ROWS.read_text())
    load = Load(**saved["load"])
    plot(saved["rows"])
    REPORT.write_text(report(saved["rows"], load, minutes, saved["stuck"], saved["seconds"]))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    minutes = int(os.environ.get("SOAK_MINUTES", "30"))
    if "--report" in sys.argv:  # write the report again from the saved rows, without a run
        write(minutes)
        return 0
    started = time.monotonic()
    with common.BenchEnv() as env:
        env.run_workers()
        # Served as `make run` serves it: gunicorn, WEB_WORKERS processes of WEB_THREADS threads.
        # With the allocator settings `make run` gives gunicorn.
        web = env.web(gunicorn=True, QUERY_CACHE_SIZE="0", **with_malloc_env({}))
        resident, resident_snippets = add_resident(web)
        clock = time.monotonic()  # the minutes start with the resident document ready
        upload_seconds, cycle = upload_plan(len(soak_pdfs()))
        load, stop, rows = Load(upload_seconds=upload_seconds, cycle_minutes=cycle), threading.Event(), []
        load.resident = f"{resident}, {resident_snippets} snippets"
        threads = [threading.Thread(target=f, args=(web, load, stop), daemon=True) for f in (search_loop, upload_loop)]
        threads.append(threading.Thread(target=process_loop, args=(env, web, load, stop), daemon=True))
        for t in threads:
            t.start()
        reembed = threading.Timer(minutes * 30, run_reembed, args=(env, load))
        reembed.start()
        for minute in range(1, minutes + 1):
            time.sleep(max(0.0, clock + minute * 60 - time.monotonic()))
            rows.append(sample(env, web, load, minute))
        stop.set()
        reembed.join()
        for t in threads:
            t.join(timeout=120)
        stuck = drain(load)
        ROWS.parent.mkdir(parents=True, exist_ok=True)
        ROWS.write_text(json.dumps({"rows": rows, "stuck": stuck, "seconds": time.monotonic() - started,
                                    "load": {k: getattr(load, k) for k in ("errors", "searches", "uploads", "deletes",
                                                                          "reembed", "upload_seconds", "resident",
                                                                          "cycle_minutes")}}))
        write(minutes)
    print(REPORT.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
