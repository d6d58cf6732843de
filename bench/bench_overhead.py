"""Benchmark figures of the model worker's cost: task overhead (figure 4) and memory (figure 6a).

Run through `bench/bench_models.py` (or `make bench`), on the worker that module starts.
"""
from __future__ import annotations

import pickle

from bench import common
from bench.bench_models import QUERY
from bench.common import Figure, Options, fmt, ms


# --------------------------------------------------------------------------- figure 4: task overhead


def pickled_sizes(batches: list[list]) -> dict[str, float]:
    """Average pickled bytes per snippet as enrich_snippets_task receives it (image encoded) and returns it."""
    import numpy as np

    snippets = [s for batch in batches for s in batch]
    sent = [len(pickle.dumps(s)) for s in snippets]
    for s in snippets:
        s.embedding = np.zeros(384, dtype=np.float32)
        s.embedding_model = common.BUNDLED_EMBEDDER
    back = [len(pickle.dumps(s)) for s in snippets]
    for s in snippets:
        s.embedding = s.embedding_model = None
    images = sum(1 for s in snippets if s.image_bytes() is not None)
    return {"snippets": len(snippets), "with_image": images, "sent_mean": sum(sent) / len(sent),
            "returned_mean": sum(back) / len(back), "sent_median": common.median(sent)}


def figure_overhead(env: common.BenchEnv, opts: Options) -> Figure:
    from celery_worker import get_sentence_embedding_task, ping_task

    env.worker("main")
    calls = opts.pick(200, 40)
    ping = lambda: ping_task.delay().get(timeout=60)  # noqa: E731
    embed = lambda: get_sentence_embedding_task.delay(QUERY).get(timeout=60)  # noqa: E731
    for _ in range(5):
        ping(), embed()
    window = common.LogWindow(env.worker("main"))
    times = common.interleave({"ping": ping, "embed": embed}, calls)
    recycles = window.recycles()
    sizes = pickled_sizes(common.corpus_batches())
    fig = Figure(
        "overhead", "4. Task overhead",
        f"round-trip latency of `ping_task` and of a one-sentence `get_sentence_embedding_task` "
        f"(.delay().get(), {calls} calls each, alternating), and pickled bytes per corpus snippet",
        "python bench/bench_models.py" + (" --quick" if opts.quick else ""), data={"times": times, "sizes": sizes},
    )
    for key, label in (("ping", "ping_task round trip"), ("embed", "one-sentence embedding round trip")):
        s = common.summarize(times[key])
        fig.add(f"{label} p50 / p95", f"{ms(s['p50'])} / {ms(s['p95'])}")
    fig.add("pickled bytes per snippet, as sent (image encoded)", f"{fmt(sizes['sent_mean'])} B",
            f"median {fmt(sizes['sent_median'])} B")
    fig.add("pickled bytes per snippet, returned (+ 384-d float32 vector)", f"{fmt(sizes['returned_mean'])} B")
    fig.notes.append(f"{sizes['snippets']} corpus snippets, {sizes['with_image']} with an image; images travel as "
                     f"their PNG/JPEG bytes (Snippet.__getstate__), never as pixels.")
    worst = {k: max(v) for k, v in times.items()}
    fig.notes.append(f"The pool child was recycled {recycles} times during these {2 * calls} tasks (MAX_TASKS_PER_CHILD=50); "
                     f"the slowest calls were {ms(worst['ping'])} (ping) and {ms(worst['embed'])} (embedding).")
    return fig


# --------------------------------------------------------------------------- figure 6: worker memory


def memory_rows(fig: Figure, label: str, mem: dict) -> None:
    procs = mem["processes"]
    parts = " + ".join(f"{p['rss_mib']:.0f}" for p in procs)
    fig.add(f"worker {label}: RSS parent + child", f"{mem['rss_mib']:.0f} MiB", f"({parts})")
    fig.add(f"worker {label}: peak RSS (VmHWM) summed", f"{mem['hwm_mib']:.0f} MiB")
    fig.add(f"worker {label}: PSS (shared pages counted once)", f"{mem['pss_mib']:.0f} MiB")


def figure_memory(mem_one: dict, mem_switch: dict) -> Figure:
    fig = Figure(
        "memory_worker", "6a. Worker memory",
        "parent + pool child of the model worker, from /proc (VmHWM) and psutil (RSS, PSS): after embedding only "
        "(embedder resident), then after reranking (a switch)",
        "python bench/bench_models.py", data={"one_model": mem_one, "after_switch": mem_switch},
    )
    memory_rows(fig, "with the embedder resident", mem_one)
    memory_rows(fig, "after a switch to the reranker", mem_switch)
    fig.notes.append("RSS summed over parent and child counts the copy-on-write pages they share (the preloaded "
                     "weights) twice; PSS counts them once. VmHWM is per process, so a child recycled between the two "
                     "readings (MAX_TASKS_PER_CHILD) starts its peak over.")
    return fig
