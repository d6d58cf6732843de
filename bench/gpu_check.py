"""GPU self-check (`make gpu-check`): what the one-model worker does on a real accelerator.

    python bench/gpu_check.py                 # on the first CUDA GPU; writes bench/GPU.md
    python bench/gpu_check.py --device cpu    # the same measurements on the CPU (a dry run)

Without a GPU (and without --device) it says so and exits 0. It uses the bundled embedder and
the tests' seeded cross-encoder, so it needs no model hub, and it finishes in a few minutes.
Measured on the device: embedder <-> reranker switch time; accelerator memory after each
eviction; fp16 vs fp32 agreement; embedding throughput through the worker vs a direct call;
search p50/p95 (query embedding + rerank through the worker); a pool child recycle.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench import common  # noqa: E402

log = logging.getLogger("bench.gpu_check")

REPORT = common.ROOT / "bench" / "GPU.md"
QUERY = "How does the worker keep only one model on the accelerator?"
TEXTS = [f"Passage {i}: the worker swaps the embedder and the reranker on demand, " + "keeping memory low. " * (i % 7)
         for i in range(256)]


def cuda_device() -> str | None:
    """'cuda' when a CUDA device answers, else None (checked without creating a CUDA context)."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    return "cuda" if torch.cuda.is_available() else None


def allocated(device: str) -> float | None:
    """MiB of accelerator memory held by tensors now (None on the CPU)."""
    if not device.startswith("cuda"):
        return None
    import torch

    torch.cuda.synchronize()
    return torch.cuda.memory_allocated() / 2**20


def manager_checks(device: str, rounds: int) -> dict:
    """Switch times and memory after each eviction, through the real ModelManager."""
    from docenrich import models
    from docenrich.config import load_settings

    settings = load_settings(model_device=device)
    manager = models.ModelManager(settings, device=device)
    manager.preload_host()
    out: dict = {"switch_embedder": [], "switch_reranker": [], "mem_embedder": [], "mem_reranker": []}
    manager.embedder()
    for _ in range(rounds):
        for kind, get in (("reranker", manager.reranker), ("embedder", manager.embedder)):
            t0 = time.perf_counter()
            get()
            if device.startswith("cuda"):
                import torch

                torch.cuda.synchronize()
            out[f"switch_{kind}"].append(time.perf_counter() - t0)
            out[f"mem_{kind}"].append(allocated(device))
    out["agreement"] = precision_agreement(manager, device)
    manager.unload()
    out["mem_after_unload"] = allocated(device)
    return out


def precision_agreement(manager, device: str) -> dict:
    """Cosine of fp16 vs fp32 embeddings, and the reranker's score order in both."""
    import torch

    embedder = manager.embedder()
    fp32 = embedder.encode(TEXTS[:64])
    dtype = torch.float16 if device.startswith("cuda") else torch.bfloat16
    with torch.autocast(device.split(":")[0], dtype=dtype):
        half = embedder.encode(TEXTS[:64])
    half = half / np.linalg.norm(half, axis=1, keepdims=True)
    cosines = np.sum(fp32 * half, axis=1)
    reranker = manager.reranker()
    raw32, _ = reranker.score(QUERY, TEXTS[:32])
    with torch.autocast(device.split(":")[0], dtype=dtype):
        raw16, _ = reranker.score(QUERY, TEXTS[:32])
    return {"dtype": str(dtype).replace("torch.", ""), "cosine_min": float(cosines.min()),
            "rerank_spearman": spearman(raw32, raw16)}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two score lists."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def direct_throughput(device: str) -> float:
    """Texts per second of an in-process encode on the device (the floor the worker is held to)."""
    from sentence_transformers import SentenceTransformer

    from docenrich.config import bundled_model_path

    model = SentenceTransformer(bundled_model_path(), device=device)
    model.encode(TEXTS[:32], batch_size=32)
    seconds, _ = common.timed(model.encode, TEXTS, batch_size=32, normalize_embeddings=True)
    return len(TEXTS) / seconds


def worker_checks(env: common.BenchEnv, device: str, rounds: int) -> dict:
    """Throughput, search latency and a recycle, through real worker processes on the device."""
    from docenrich import client

    dev_env = {"MODEL_DEVICE": device}
    env.worker("gpu", env=dev_env)
    client.call(client.EMBED, (TEXTS[:8],), "warm-up", timeout=300, interactive=False)
    seconds, _ = common.timed(client.call, client.EMBED, (TEXTS,), "embedding", timeout=300, interactive=False)
    searches = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        client.embed_query(QUERY, timeout=120)
        client.rerank(QUERY, TEXTS[:30], timeout=120)
        searches.append(time.perf_counter() - t0)
    env.stop_worker("gpu")
    recycle = env.worker("gpu-recycle", args=["--max-tasks-per-child=1"], env=dev_env)
    gaps = []
    for _ in range(4):
        t0 = time.perf_counter()
        client.call(client.PING, (None,), "ping", timeout=120, interactive=False)
        gaps.append(time.perf_counter() - t0)
    env.stop_worker(recycle.name)
    return {"worker_throughput": len(TEXTS) / seconds, "search": searches, "recycle_ping": gaps[1:]}


def render(device: str, direct: dict, worker: dict, direct_tps: float, elapsed: float) -> str:
    """The report as markdown."""
    ms = lambda xs: f"{common.median(xs) * 1000:.1f} ms"  # noqa: E731
    mib = lambda x: "n/a (CPU)" if x is None else f"{x:.0f} MiB"  # noqa: E731
    agree = direct["agreement"]
    rows = [
        ["switch to reranker (p50)", ms(direct["switch_reranker"]), "device copy, no load from disk"],
        ["switch to embedder (p50)", ms(direct["switch_embedder"]), ""],
        ["memory with reranker resident", mib(direct["mem_reranker"][-1]), "the embedder was evicted"],
        ["memory with embedder resident", mib(direct["mem_embedder"][-1]), "the reranker was evicted"],
        ["memory after unload", mib(direct["mem_after_unload"]), "everything freed"],
        [f"{agree['dtype']} vs fp32 embedding cosine (min)", f"{agree['cosine_min']:.5f}", "target ≥ 0.999"],
        [f"{agree['dtype']} vs fp32 rerank Spearman", f"{agree['rerank_spearman']:.4f}", ""],
        ["embedding through the worker / direct", f"{worker['worker_throughput'] / direct_tps:.2f}×",
         f"{worker['worker_throughput']:.0f} vs {direct_tps:.0f} texts/s"],
        ["search p50 / p95 (embed + rerank 30)", f"{ms(worker['search'])} / "
         f"{common.percentile(worker['search'], 95) * 1000:.1f} ms", ""],
        ["task on a fresh child after a recycle (p50)", ms(worker["recycle_ping"]), "--max-tasks-per-child=1"],
    ]
    return "\n".join([
        "# GPU self-check", "",
        f"Generated by `python bench/gpu_check.py` (`make gpu-check`) on `{device}` in {elapsed / 60:.1f} min, "
        f"{time.strftime('%Y-%m-%d')}. Bundled embedder, seeded test cross-encoder.", "",
        common.table(["measure", "value", "note"], rows), "",
    ])


def main(argv: list[str] | None = None) -> int:
    """Measure on the device and write the report; without a GPU, say so and exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="measure on this device (default: the first CUDA GPU)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    device = args.device or cuda_device()
    if device is None:
        print("No CUDA GPU is visible (torch.cuda.is_available() is false): nothing to measure. "
              "`python bench/gpu_check.py --device cpu` runs the same checks on the CPU.")
        return 0
    output = args.output or (REPORT if device.startswith("cuda") else common.OUT_DIR / f"GPU-{device}.md")
    started = time.perf_counter()
    with common.BenchEnv() as env:
        direct = manager_checks(device, args.rounds)
        direct_tps = direct_throughput(device)
        worker = worker_checks(env, device, args.rounds)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(device, direct, worker, direct_tps, time.perf_counter() - started))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
