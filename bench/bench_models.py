"""Model benchmarks: embedding throughput (direct vs through Redis + worker), model switching,
child recycling, task overhead and worker memory.

    python bench/bench_models.py [--quick]

Benchmark workers load this module with `--include=bench.bench_models` for two probe tasks
(`bench.probe`, `bench.encode_in_child`) that report what the pool child sees from inside.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench.common import Figure, Options, Target, fmt, ms, ratio, secs  # noqa: E402

log = logging.getLogger(__name__)

QUERY = "How is the fundamental group of a topological space defined?"


# --------------------------------------------------------------------------- probes (worker side)


def register_probes() -> None:
    """Tasks the benchmark asks a worker's pool child about itself."""
    from celery_config import celery_app

    @celery_app.task(name="bench.probe")
    def probe() -> dict:
        import gc

        import torch

        start = time.perf_counter()
        gc.collect()  # what the worker parent does before forking each child (Celery issue #2927)
        return {"pid": os.getpid(), "torch_threads": torch.get_num_threads(), "gc_collect_s": time.perf_counter() - start,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
                "interop_threads": torch.get_num_interop_threads(), "affinity": sorted(os.sched_getaffinity(0))}

    @celery_app.task(name="bench.encode_in_child")
    def encode_in_child(text_batches: list[list[str]]) -> float:
        """Seconds the child's own embedder needs for the batches: the worker's compute, no transport."""
        from docenrich import models

        embedder = models.get_manager().embedder()
        start = time.perf_counter()
        for texts in text_batches:
            embedder.encode(texts)
        return time.perf_counter() - start


if os.environ.get("DOCENRICH_WORKER_ROLE"):  # set by start_celery_worker.py: we were --include'd by a worker
    register_probes()


def probe(app) -> dict:
    return app.send_task("bench.probe").get(timeout=120)


def published_timings(app, worker) -> dict[str, float]:
    """The `timings` of the worker's published model status (hash docenrich:model-status, field hostname)."""
    raw = app.backend.client.hget("docenrich:model-status", worker.hostname)
    return json.loads(raw).get("timings", {}) if raw else {}


# --------------------------------------------------------------------------- figure 2: embedding throughput


@functools.lru_cache(maxsize=1)
def direct_model(threads: int):
    """The bundled SentenceTransformer in this process, torch pinned to the worker's thread count."""
    import torch
    from sentence_transformers import SentenceTransformer

    from docenrich.config import bundled_model_path

    torch.set_num_threads(threads)
    return SentenceTransformer(bundled_model_path(), device="cpu")


def encode_direct(model, text_batches: list[list[str]], batch_size: int) -> None:
    """(a): one SentenceTransformer.encode per pipeline batch, with the worker's arguments."""
    for texts in text_batches:
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                     show_progress_bar=False)


def run_tasks(signatures: list, timeout: float = 600) -> list[str]:
    """Queue every task at once (as the pipeline does), wait for all; their ids."""
    results = [sig.apply_async() for sig in signatures]
    for result in results:
        result.get(timeout=timeout)
    ids = [r.id for r in results]
    for result in results:
        result.forget()
    return ids


class EmbeddingRun:
    """(a) direct vs (b) get_sentence_embedding_task and enrich_snippets_task, measured alternately."""

    def __init__(self, env: common.BenchEnv, opts: Options):
        from docenrich.config import get_settings

        self.env, self.opts = env, opts
        self.worker = env.worker("main")
        self.child = probe(env.app)
        self.batch_size = get_settings().model_batch_size
        self.batches = common.corpus_batches(opts.pick(40, 24))
        self.texts = common.embedding_texts(self.batches)
        self.snippets = sum(len(b) for b in self.batches)
        self.model = direct_model(self.child["torch_threads"])
        self.task_ids: dict[str, list[list[str]]] = {"b_embed": [], "b_enrich": []}  # per round

    def direct(self) -> None:
        encode_direct(self.model, self.texts, self.batch_size)

    def embed_task(self) -> None:
        from celery_worker import get_sentence_embedding_task

        self.task_ids["b_embed"].append(run_tasks([get_sentence_embedding_task.s(t) for t in self.texts]))

    def enrich_task(self) -> None:
        from celery_worker import enrich_snippets_task

        self.task_ids["b_enrich"].append(run_tasks([enrich_snippets_task.s(b) for b in self.batches]))

    def in_child(self) -> None:
        self.env.app.send_task("bench.encode_in_child", (self.texts,)).get(timeout=600)

    def measure(self) -> dict:
        # Warm both sides once (first forward passes allocate and tune).
        self.direct()
        self.embed_task()
        self.task_ids["b_embed"].clear()
        methods = {"a_direct": self.direct, "b_embed": self.embed_task, "b_enrich": self.enrich_task,
                   "child_encode": self.in_child}
        window = common.LogWindow(self.worker)
        times = common.interleave(methods, self.opts.pick(12, 2), common.system_cpu(), budget_s=self.opts.pick(70, 20))
        in_worker = {k: [sum(window.by_id(ids).values()) for ids in rounds] for k, rounds in self.task_ids.items()}
        return {"times": times, "in_worker_task_s": in_worker, "snippets": self.snippets, "recycles": window.recycles(),
                "tasks_per_round": len(self.batches), "child": self.child}


def infinity_note() -> str:
    """Why (d) Infinity is not measured here."""
    try:
        import infinity_emb  # noqa: F401
    except ImportError:
        return ("not measured: `pip install --dry-run infinity-emb[torch]` (0.0.78) keeps torch 2.13.0+cpu but would "
                "downgrade the shared venv's numpy 2.4.6→1.26.4, sentence-transformers 6.2.0→3.4.1, transformers "
                "5.23→4.57 and huggingface_hub; that breaks the project's own stack, so it was not installed")
    return "infinity_emb is importable, but this benchmark does not drive it yet"


def figure_embedding(env: common.BenchEnv, opts: Options) -> tuple[Figure, EmbeddingRun]:
    run = EmbeddingRun(env, opts)
    data = run.measure()
    n = data["snippets"]
    times = data["times"]
    med = {k: common.median(v) for k, v in times.items()}
    rate = {k: n / v for k, v in med.items() if ":" not in k}
    fig = Figure(
        "embedding", "2. Embedding throughput (a) direct vs (b) through Redis + worker",
        f"snippets/s embedding {n} corpus snippets in {data['tasks_per_round']} pipeline batches "
        f"(SNIPPET_BATCH_PAGES pages each, taken round-robin over the corpus documents), batch size "
        f"{run.batch_size}, torch threads {run.child['torch_threads']} in both processes; (a), (b) embed, (b) enrich "
        f"and the same encode run inside the worker's child alternate within each of {len(times['a_direct'])} rounds "
        f"(order rotated); (b) queues all batches at once as the pipeline does and waits for all results. Ratio = "
        f"median over rounds of the per-round throughput ratio (robust to load drifts); beside it the ratio of the "
        f"medians and the CPU-time ratio (CPU seconds of every benchmark process — client, Redis, worker — per "
        f"round: what the work costs regardless of the other tenants)",
        "python bench/bench_models.py" + (" --quick" if opts.quick else ""), data=data,
    )
    fig.add("(a) direct SentenceTransformer.encode", f"{fmt(rate['a_direct'])} snippets/s", "1.00")
    rows = (("b_embed", "(b) get_sentence_embedding_task", Target(0.9, True, "×")),
            ("b_enrich", "(b) enrich_snippets_task", Target(0.9, True, "×")),
            ("child_encode", "same encode inside the worker's child (no Celery, no transport)", None))
    for key, label, target in rows:
        paired = common.median(common.paired_speedups(times, key, "a_direct"))
        cpu = ratio(med["a_direct:cpu"], med[f"{key}:cpu"])
        fig.add(label, f"{fmt(rate[key])} snippets/s",
                f"{paired:.2f}× (a) (medians: {ratio(rate[key], rate['a_direct']):.2f}×; CPU: {cpu:.2f}×)", target,
                paired if target else None)
    for key in ("b_embed", "b_enrich"):
        inside = common.median(data["in_worker_task_s"][key])
        outside = common.median(w - i for w, i in zip(times[key], data["in_worker_task_s"][key]))
        fig.add(f"{key}: time inside the tasks (worker log) / wall, per round", f"{secs(inside)} / {secs(med[key])}",
                f"outside the tasks: {ms(outside)}")
    fig.notes.append(embedding_cause(data, times))
    spread = ", ".join(f"{k} {fmt(min(v))}–{fmt(max(v))} s" for k, v in times.items() if ":" not in k)
    fig.notes.append(f"Spread of the per-round wall seconds (machine noise): {spread}.")
    fig.add("(d) Infinity", "n/a", "")
    fig.notes.append(f"(d) Infinity: {infinity_note()}.")
    fig.notes.append(f"Worker child: pid {run.child['pid']}, torch threads {run.child['torch_threads']}, "
                     f"interop {run.child['interop_threads']}, CPU affinity {run.child['affinity']}, OMP_WAIT_POLICY "
                     f"{run.child['omp_wait_policy']}; this process: OMP_WAIT_POLICY "
                     f"{os.environ.get('OMP_WAIT_POLICY', '(default)')} (both set up by docenrich.models.import_model_libraries).")
    fig.notes.append("(c), the whole ingest, is in the ingest figure below.")
    return fig, run


def embedding_cause(data: dict, times: dict[str, list[float]]) -> str:
    """Where (b) spends time beyond the bare encode, per task, paired within rounds."""
    tasks = data["tasks_per_round"]
    parts = []
    for key, label in (("b_embed", "get_sentence_embedding_task"), ("b_enrich", "enrich_snippets_task")):
        inside = data["in_worker_task_s"][key]
        beyond = common.median(i - c for i, c in zip(inside, times["child_encode"]))
        outside = common.median(w - i for w, i in zip(times[key], inside))
        parts.append(f"{label}: {ms(outside / tasks)} per task outside the task (queueing, transport, result) and "
                     f"{ms(beyond / tasks)} per task inside it beyond the bare encode (median of per-round differences "
                     f"with the in-child encode, within noise)")
    child = common.median(common.paired_speedups(times, "child_encode", "a_direct"))
    celery = {k: common.median(common.paired_speedups(times, k, "child_encode")) for k in ("b_embed", "b_enrich")}
    return (f"Splitting (b)/(a) = (child encode / a) × (b / child encode): the bare encode inside the worker's child "
            f"ran at {child:.2f}× (a) in this run — same model, arguments and thread count, so this is a process-level "
            f"difference (it came out between about 0.9× and 1.1× in different runs on this shared VM, stable within "
            f"a run) — and Celery kept {celery['b_embed']:.2f}× (embed) / {celery['b_enrich']:.2f}× (enrich) of that. "
            f"Per round of {tasks} tasks: {'; '.join(parts)}. The pool child was recycled {data['recycles']} times "
            f"during these rounds (MAX_TASKS_PER_CHILD); a round that hits a recycle also waits for it (figure 3), "
            f"which the median of per-round ratios leaves out.")


# --------------------------------------------------------------------------- figure 3: switching and recycling


def cold_load_child() -> dict:
    """Run in a fresh process: import the model libraries, then load embedder and reranker from disk."""
    start = time.perf_counter()
    from docenrich import models

    models.import_model_libraries()
    imported = time.perf_counter() - start
    manager = models.ModelManager()
    embedder = manager.embedder()
    first = time.perf_counter()
    embedder.encode([QUERY])
    first_forward = time.perf_counter() - first
    manager.reranker()
    t = manager.timings
    return {"import_s": imported, "embedder_s": t["cold_load_embedder"], "reranker_s": t["cold_load_reranker"],
            "first_encode_s": first_forward}


def cold_loads(rounds: int) -> list[dict]:
    """cold_load_child in `rounds` fresh interpreters (the files are in the page cache after the first)."""
    out = []
    for _ in range(rounds):
        proc = subprocess.run([sys.executable, __file__, "--cold-load-child"], cwd=common.ROOT, env=os.environ.copy(),
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"cold-load probe failed: {proc.stderr[-2000:]}")
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def passages(n: int = 30) -> list[str]:
    """n realistic rerank candidates (corpus snippet texts)."""
    texts = [t for batch in common.embedding_texts(common.corpus_batches(200)) for t in batch if t.strip()]
    return texts[:n]


def switch_in_process(rounds: int, cands: list[str]) -> dict[str, list[float]]:
    """ModelManager in this process: embed → rerank → embed, switch times from its timings."""
    from docenrich import models

    manager = models.ModelManager()
    manager.preload_host()
    manager.embedder().encode([QUERY])
    out: dict[str, list[float]] = {"switch_reranker": [], "switch_embedder": []}
    for _ in range(rounds):
        manager.reranker().score(QUERY, cands)
        out["switch_reranker"].append(manager.timings["switch_reranker"])
        manager.embedder().encode([QUERY])
        out["switch_embedder"].append(manager.timings["switch_embedder"])
    manager.clear()
    return out


def switch_through_worker(env: common.BenchEnv, rounds: int, cands: list[str]) -> dict[str, list[float]]:
    """Round trips embed, embed, rerank, rerank through the worker: the first of each pair switches.
    Switch times are the worker's own, from its published status."""
    from celery_worker import get_sentence_embedding_task, rerank_task

    worker = env.worker("main")
    embed = lambda: get_sentence_embedding_task.delay(QUERY).get(timeout=120)  # noqa: E731
    rerank = lambda: rerank_task.delay(QUERY, cands).get(timeout=120)  # noqa: E731
    embed()
    out: dict[str, list[float]] = {k: [] for k in ("rt_embed_switch", "rt_embed_same", "rt_rerank_switch",
                                                   "rt_rerank_same", "switch_embedder", "switch_reranker")}
    for _ in range(rounds):
        for kind, call in (("reranker", rerank), ("embedder", embed)):
            rt_switch = common.timed(call)[0]
            # A child recycled between the calls loaded the model instead of switching to it:
            # that round says nothing about a switch, so it is left out rather than miscounted.
            switched = published_timings(env.app, worker).get(f"switch_{kind}")
            short = "rerank" if kind == "reranker" else "embed"
            if switched is not None:
                out[f"rt_{short}_switch"].append(rt_switch)
                out[f"switch_{kind}"].append(switched)
            out[f"rt_{short}_same"].append(common.timed(call)[0])
    return out


def wait_fresh_child(worker, used: set[int], timeout: float = 8.0) -> None:
    """Block until the worker's pool child is a live process not in `used` (children that existed when
    the last task returned), i.e. one that has run nothing yet; after `timeout` s settle for any."""
    import psutil

    def fresh() -> bool:
        kids = psutil.Process(worker.process.pid).children()
        return any(k.pid not in used and k.status() != psutil.STATUS_ZOMBIE for k in kids)

    try:
        common.wait_for(fresh, timeout, 0.02, "a fresh pool child")
    except TimeoutError:
        log.warning("no new pool child within %gs; measuring anyway", timeout)
    time.sleep(0.3)  # let it finish worker_process_init


def recycle_series(env: common.BenchEnv, worker, app, rounds: int, tasks: tuple[str, ...]) -> dict[str, list[float]]:
    """On a --max-tasks-per-child=1 worker, alternately with the warm main worker: `fresh_idle` is the
    first task of a child that is already forked and idle; `fresh_b2b` the next task sent at once, which
    also waits for the used child to be reaped and a new one forked and initialised."""
    out: dict[str, list[float]] = {f"{k}_{t}": [] for k in ("warm", "fresh_idle", "fresh_b2b") for t in tasks}
    used: set[int] = set()  # with one task per child, any live child is unused at first
    for task in tasks:
        call = RECYCLE_CALLS[task]
        call(env.app)
        for _ in range(rounds):
            wait_fresh_child(worker, used)
            out[f"fresh_idle_{task}"].append(common.timed(call, app)[0])
            out[f"fresh_b2b_{task}"].append(common.timed(call, app)[0])
            used = set(worker.child_pids())
            out[f"warm_{task}"].append(common.timed(call, env.app)[0])
    return out


RECYCLE_CALLS = {
    "ping": lambda app: app.send_task("docenrich.ping").get(timeout=120),
    "embed": lambda app: app.send_task("docenrich.get_sentence_embedding", (QUERY,)).get(timeout=120),
}


def recycle_cost(env: common.BenchEnv, rounds: int) -> dict[str, list[float]]:
    """Tasks on a --max-tasks-per-child=1 worker (its own Redis db) vs the warm main worker."""
    env.worker("main")
    worker = env.worker("recycle", args=["--max-tasks-per-child=1"], db=1)
    out = recycle_series(env, worker, env.app_for(1), rounds, ("ping", "embed"))
    env.stop_worker("recycle")
    return out


def figure_switching(env: common.BenchEnv, opts: Options) -> Figure:
    rounds = opts.pick(5, 2)
    cands = passages(8)
    cold = cold_loads(opts.pick(3, 1))
    inproc = switch_in_process(rounds, cands)
    worker = switch_through_worker(env, rounds, cands)
    gc_s = probe(env.app)["gc_collect_s"]
    recycle = recycle_cost(env, opts.pick(5, 2))
    fig = Figure(
        "switching", "3. Model loading, switching and child recycling",
        "seconds: cold load from disk in a fresh interpreter (page cache warm), embedder ↔ reranker switch with "
        "weights cached in host memory (ModelManager in-process, and in the worker from its published status "
        "`timings`), and the cost of a task landing on a freshly forked child (--max-tasks-per-child=1) vs the same "
        "task on the warm main worker, alternately",
        "python bench/bench_models.py" + (" --quick" if opts.quick else ""),
        data={"cold": cold, "in_process": inproc, "worker": worker, "recycle": recycle, "gc_collect_s": gc_s},
    )
    med = lambda key, src: common.median(src[key])  # noqa: E731
    fig.add("import torch + sentence-transformers (fresh process)", secs(common.median(c["import_s"] for c in cold)))
    fig.add("cold load embedder from disk", secs(common.median(c["embedder_s"] for c in cold)))
    fig.add("cold load reranker from disk", secs(common.median(c["reranker_s"] for c in cold)))
    fig.add("first encode after cold load", secs(common.median(c["first_encode_s"] for c in cold)))
    switch = Target(0.2, False, " s")
    for kind in ("reranker", "embedder"):
        value = med(f"switch_{kind}", inproc)
        fig.add(f"switch → {kind}, ModelManager in-process", secs(value), "", switch, value)
    for kind in ("reranker", "embedder"):
        value = med(f"switch_{kind}", worker)
        fig.add(f"switch → {kind}, in the worker (status timings)", secs(value), "", switch, value)
    for kind in ("rerank", "embed"):
        sw, same = med(f"rt_{kind}_switch", worker), med(f"rt_{kind}_same", worker)
        fig.add(f"{kind} round trip ({len(cands)} passages for rerank): after a switch / without",
                f"{ms(sw)} / {ms(same)}", f"Δ {ms(sw - same)}")
    recycle_rows(fig, recycle)
    fig.notes.append("Both models stay in the worker parent's host memory (MODEL_PRELOAD, MODEL_HOST_CACHE=2) and are "
                     "inherited by each forked child, so on the CPU a switch moves no weights: it only marks the other "
                     "model resident; on a GPU it would be a host↔device copy.")
    fig.notes.append(recycle_cause(recycle, gc_s))
    return fig


def recycle_rows(fig: Figure, series: dict[str, list[float]]) -> None:
    """Median cost of a fresh child vs a warm one (mean and worst beside: a missed exit event makes it bimodal)."""
    target = Target(1.0, False, " s")
    for task in ("ping", "embed"):
        warm = common.median(series[f"warm_{task}"])
        for variant, label in (("fresh_b2b", "next task sent right after the recycle"),
                               ("fresh_idle", "first task of an already forked child")):
            costs = [t - warm for t in series[f"{variant}_{task}"]]
            cost = common.median(costs)
            use_target = variant == "fresh_b2b"
            fig.add(f"child recycle, {task}: {label}", f"{ms(warm + cost)} vs warm {ms(warm)}",
                    f"cost {secs(cost)} (mean {secs(sum(costs) / len(costs))}, worst {secs(max(costs))})",
                    target if use_target else None, cost if use_target else None)


def recycle_cause(series: dict[str, list[float]], gc_s: float) -> str:
    """What a recycle costs and why, from the measured waits."""
    waits = sorted(series["fresh_b2b_ping"] + series["fresh_b2b_embed"])
    slow = [t for t in waits if t > 1.0]
    text = (f"Child recycle: the next task waits until the pool reaps the exited child, forks a new one and the "
            f"child initialises; measured waits (ping and embed): {', '.join(secs(t) for t in waits)}. Part of it is "
            f"the gc.collect() Celery runs in the parent before every fork (Celery issue #2927): {secs(gc_s)} over the "
            f"worker's heap (timed inside a child, whose heap is the parent's; gc.freeze() after preloading keeps it "
            f"small). ")
    if slow:
        text += (f"{len(slow)} of {len(waits)} waits exceeded 1 s: Celery missed the child's exit event and only "
                 f"noticed it at its periodic pool maintenance (every 5 s in stock AsynPool, celery/celery#9588). ")
    text += ("With MAX_TASKS_PER_CHILD=50 (the default) a recycle happens every 50 tasks (every ~16 page batches of an "
             "ingestion, 3 tasks each); a search whose task lands on it waits that long.")
    return text


# --------------------------------------------------------------------------- entry points


def run(env: common.BenchEnv, opts: Options) -> list[Figure]:
    """All model figures, on a freshly started worker (memory 'one model' needs one that never reranked)."""
    from bench.bench_overhead import figure_memory, figure_overhead

    env.worker("main", fresh=True)
    embedding, _ = figure_embedding(env, opts)
    mem_one = common.process_memory(env.worker("main").process.pid)
    overhead = figure_overhead(env, opts)
    switching = figure_switching(env, opts)
    mem_switch = common.process_memory(env.worker("main").process.pid)
    env.keep_log(env.worker("main"))
    return [embedding, switching, overhead, figure_memory(mem_one, mem_switch)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--cold-load-child"]:
        common.ensure_import_path()
        logging.disable(logging.WARNING)
        print(json.dumps(cold_load_child()))
        return 0
    return common.cli(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
