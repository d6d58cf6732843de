"""A process gives its mapped pages of the vector files back past a budget, and reads the same rows after."""
from __future__ import annotations

import numpy as np
import pytest

from docenrich.vectorindex.files import ManifestSource
from docenrich.vectorindex.mapped import MappedIndex
from docenrich.vectorindex.residency import PageBudget, mapped_ranges, release, resident_bytes
from tests.storeutil import write_vector_files

pytestmark = pytest.mark.skipif(not resident_bytes(), reason="needs /proc/self/statm")

DIM, ROWS, MIB = 1024, 20_000, 2**20  # 80 MiB of float32 rows


def _index(tmp_path, budget: int) -> tuple[MappedIndex, np.ndarray]:
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    files = write_vector_files(tmp_path / "vectors" / "m", rows)
    index = MappedIndex(ManifestSource(files), "m", tmp_path, "exact", page_budget=budget)
    index.files = files
    index.refresh()
    return index, rows


def test_released_pages_leave_the_rss_and_read_back_the_same(tmp_path):
    index, rows = _index(tmp_path, 0)
    before = resident_bytes()
    total = float(np.asarray(index._view.vec).sum())  # touches every page of the rows
    assert resident_bytes() - before > 60 * MIB
    assert mapped_ranges(index.files.dir)
    assert release(index.files.dir) >= 1
    assert resident_bytes() - before < 20 * MIB
    assert float(np.asarray(index._view.vec).sum()) == total
    assert np.array_equal(np.asarray(index._view.vec[123]), rows[123])


@pytest.mark.parametrize("budget", [0, 16 * MIB])
def test_searches_stay_within_the_budget(tmp_path, budget):
    index, rows = _index(tmp_path, budget)
    release(index.files.dir)
    before = resident_bytes()
    for i in range(5):
        assert index.search(rows[i * 100], 3)[0][0] == i * 100 + 1  # each exact scan reads all 80 MiB
    grown = resident_bytes() - before
    if budget:
        assert grown < budget + 8 * MIB
    else:
        assert grown > 60 * MIB  # without a budget the scanned rows stay counted


def test_a_budget_of_zero_never_releases(tmp_path):
    assert not PageBudget(0).check(tmp_path)
