"""The graph's insertion order: a permutation, a random skeleton first, then neighbours side by side."""
from __future__ import annotations

import numpy as np

from docenrich.vectorindex import order
from docenrich.vectorindex.files import ManifestSource
from docenrich.vectorindex.mapped import MappedIndex, build_graph
from tests.storeutil import write_vector_files


def _clustered(n: int, clusters: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows around `clusters` centres, shuffled; and each row's centre."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    label = rng.integers(0, clusters, n)
    x = centres[label] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), label


def _same_neighbour_share(label: np.ndarray) -> float:
    return float(np.mean(label[1:] == label[:-1]))


def test_small_sets_keep_their_order():
    x, _ = _clustered(500, 5, 16, seed=1)
    assert order.insertion_order(x).tolist() == list(range(500))


def test_order_is_a_permutation_with_a_random_skeleton_then_clusters():
    x, label = _clustered(30_000, 60, 32, seed=2)
    perm = order.insertion_order(x, seed=3)
    assert sorted(perm.tolist()) == list(range(len(x)))
    cut = int(order.SKELETON_SHARE * len(x))
    before = _same_neighbour_share(label)
    skeleton, rest = _same_neighbour_share(label[perm[:cut]]), _same_neighbour_share(label[perm[cut:]])
    # Input and skeleton: neighbours in file order share a cluster about 1 time in 60.
    assert before < 0.05 and skeleton < 0.05
    assert rest > 0.9, rest


def test_a_graph_built_in_that_order_keeps_row_positions_as_keys(tmp_path):
    """Every row searched for finds itself: the graph's keys are row positions, whatever the insertion order."""
    n, dim = 25_000, 32
    x, _ = _clustered(n, 50, dim, seed=4)
    files = write_vector_files(tmp_path / "vectors" / "m", x, first_id=1000)
    assert build_graph(files, 0) is not None
    index = MappedIndex(ManifestSource(files), "m", tmp_path, "hnsw", 0, page_budget=0)
    index.files = files
    index.refresh()
    assert index._view.graph_rows == n
    rng = np.random.default_rng(5)
    for row in rng.integers(0, n, 40).tolist():
        best = index.search(x[row], 1)
        assert best[0][0] == row + 1000 and abs(best[0][1] - 1.0) < 1e-4

