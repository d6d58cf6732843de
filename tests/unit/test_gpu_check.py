"""`make gpu-check` on a machine without a GPU: it says so and succeeds, measuring nothing."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.env import ROOT, TEST_ENV


def test_gpu_check_without_a_gpu_says_so_and_exits_0():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: `make gpu-check` measures it instead")
    before = (ROOT / "bench" / "GPU.md").read_text() if (ROOT / "bench" / "GPU.md").exists() else None
    out = subprocess.run([sys.executable, "bench/gpu_check.py"], cwd=ROOT, env={**os.environ, **TEST_ENV},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "No CUDA GPU is visible" in out.stdout
    after = (ROOT / "bench" / "GPU.md").read_text() if (ROOT / "bench" / "GPU.md").exists() else None
    assert after == before, "a machine without a GPU must not overwrite the GPU report"
