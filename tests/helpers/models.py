"""Model checkpoints built from the bundled all-MiniLM-L6-v2, once per session."""
from __future__ import annotations

import shutil
from pathlib import Path

from docenrich.config import bundled_model_path


def build_reranker_checkpoint(target: Path) -> Path:
    """A cross-encoder made from the bundled model with a seeded head, saved to disk once."""
    if (target / "config.json").exists():
        return target
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(1234)
    model = CrossEncoder(bundled_model_path(), num_labels=1, device="cpu")
    model.save(str(target))
    return target


def build_bge_m3_checkpoint(target: Path) -> Path:
    """A tiny model in BGE-M3's folder layout: the bundled MiniLM as the transformer, plus seeded
    colbert_linear.pt and sparse_linear.pt heads, as BGEM3FlagModel loads them; built once."""
    if (target / "sparse_linear.pt").exists():
        return target
    import torch

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(bundled_model_path(), tmp)
    torch.manual_seed(4321)
    torch.save(torch.nn.Linear(384, 384).state_dict(), tmp / "colbert_linear.pt")
    torch.save(torch.nn.Linear(384, 1).state_dict(), tmp / "sparse_linear.pt")
    tmp.rename(target)
    return target
