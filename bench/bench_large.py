"""A 2,700-page document, upload → ready: pages/s per quarter of the document and the peak RSS of
every worker process (figure 9).

The document is the PARI/GP user's guide of `make eval` (675 pages of function reference) four times
over in one PDF, so that every quarter holds the same pages and a change of rate between quarters is
the pipeline's, not the content's (joined different manuals, the quarters differ by what their pages
hold: 0.80x last against first, most of it the manuals' own difference). It is ingested by the workers `make run` starts (a model worker and a docs worker) through the
web app. The quarters are timed from the document's progress (stored page batches) as the API reports
it, polled every half second; every worker process's RSS is read at the same time, and its peak
(VmHWM) kept, pool children that were recycled included.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench.common import Figure, Options, Target, fmt, secs  # noqa: E402

QUARTERS = (0.25, 0.5, 0.75, 1.0)


COPIES = 4


def large_pdf(opts: Options) -> Path:
    """The PARI/GP user's guide COPIES times in one PDF (the first 300 pages in a quick run)."""
    import pymupdf

    from bench import eval_retrieval

    out = common.OUT_DIR / ("large-quick.pdf" if opts.quick else f"large-pari-x{COPIES}.pdf")
    if out.exists():
        return out
    docs = eval_retrieval.fetch_docs("reference")
    joined = pymupdf.open()
    for _ in range(COPIES):
        with pymupdf.open(docs["pari"]) as part:
            joined.insert_pdf(part)
    if opts.quick:
        joined.select(range(300))
    joined.save(out, garbage=3, deflate=True)
    return out


class Sampler:
    """Peak RSS (VmHWM) of every process of the workers, by worker and role (parent, pool child)."""

    def __init__(self, workers: dict[str, object]):
        self.workers = workers
        self.peaks: dict[tuple[str, str], float] = {}
        self.children: dict[str, set[int]] = {name: set() for name in workers}

    def sample(self) -> None:
        import psutil

        for name, proc in self.workers.items():
            try:
                root = psutil.Process(proc.process.pid)
                members = [("parent", root)] + [("pool child", c) for c in root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for role, p in members:
                try:
                    hwm = _hwm_mib(p.pid)
                except OSError:
                    continue
                if role == "pool child":
                    self.children[name].add(p.pid)
                key = (name, role)
                self.peaks[key] = max(self.peaks.get(key, 0.0), hwm)


def _hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ingest_with_quarters(web, path: Path, sampler: Sampler, timeout: float = 7200) -> dict:
    """Upload, then poll progress; returns the times at which each quarter of the pages was stored."""
    started = time.monotonic()
    doc = web.upload(path)
    marks: dict[float, float] = {}
    while True:
        _, doc = web.get(f"/api/documents/{doc['id']}")
        sampler.sample()
        now = time.monotonic() - started
        progress = float(doc.get("progress") or 0.0) if doc["state"] != "ready" else 1.0
        for q in QUARTERS:
            if q not in marks and progress >= q - 1e-9:
                marks[q] = now
        if doc["state"] in ("ready", "failed"):
            break
        if now > timeout:
            raise RuntimeError(f"the large document was not ready after {timeout:.0f} s")
        time.sleep(0.5)
    if doc["state"] != "ready":
        raise RuntimeError(f"the large document failed: {doc['error']}")
    return {"marks": marks, "wall_s": time.monotonic() - started, "pages": doc["pages"],
            "snippets": doc["snippet_count"]}


def figure_large(env: common.BenchEnv, opts: Options) -> Figure:
    path = large_pdf(opts)
    models, docs = env.run_workers()
    web = env.web()
    sampler = Sampler({"model worker": models, "docs worker": docs})
    run = ingest_with_quarters(web, path, sampler)
    pages, marks = run["pages"], run["marks"]
    fig = Figure(
        "large", f"9. A {pages:,}-page document: pages/s per quarter, peak RSS per worker process",
        f"one {pages}-page PDF (the PARI/GP user's guide of `make eval` {COPIES} times over: every quarter holds the "
        "same pages) uploaded through the API and "
        "processed by a model worker and a docs worker as `make run` starts them; pages/s within each quarter of "
        "the document (from the stored page batches the API reports) and the peak RSS (VmHWM) of every worker "
        "process, pool children included (they are recycled every MAX_TASKS_PER_CHILD tasks)",
        "python bench/run_all.py --only large" + (" --quick" if opts.quick else ""),
        data={"run": run, "peaks_mib": {f"{k[0]} {k[1]}": v for k, v in sampler.peaks.items()}},
    )
    prev_t, rates = 0.0, []
    for i, q in enumerate(QUARTERS, start=1):
        t = marks.get(q, run["wall_s"])
        rate = pages * 0.25 / max(t - prev_t, 1e-6)
        rates.append(rate)
        fig.add(f"quarter {i} (pages {int(pages * (q - 0.25)) + 1}–{int(pages * q)})", f"{fmt(rate)} pages/s",
                f"{rate / rates[0]:.2f}× quarter 1")
        prev_t = t
    steady = rates[-1] / rates[0]
    fig.add("last quarter against the first", f"{steady:.2f}×", "", Target(0.8, True, "×"), steady)
    fig.add("whole document", f"{fmt(pages / run['wall_s'])} pages/s", f"{secs(run['wall_s'])}, {run['snippets']} snippets")
    for (name, role), peak in sorted(sampler.peaks.items()):
        fig.add(f"peak RSS, {name} {role}", f"{fmt(peak)} MiB",
                f"{len(sampler.children[name])} pool children seen" if role == "pool child" else "")
    fig.notes.append("The quarters are of the page batches stored, as /api/documents reports them; the first includes "
                     "the first model load and the last the final store. The docs worker extracts while the model "
                     "worker embeds the previous batch, so the rate is set by whichever is slower on this machine.")
    return fig


def run(env: common.BenchEnv, opts: Options) -> list[Figure]:
    return [figure_large(env, opts)]


if __name__ == "__main__":
    sys.exit(common.cli(run, __doc__.splitlines()[0]))
