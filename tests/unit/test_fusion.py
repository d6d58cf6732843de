"""Fusing candidate lists: reciprocal-rank fusion, the weighted sum, and the ranks reported per list."""
from __future__ import annotations

from docenrich import fusion


def test_rrf_rewards_agreement_between_lists():
    dense = [(1, 0.9), (2, 0.8), (3, 0.7)]
    lexical = [(3, 12.0), (4, 11.0), (1, 2.0)]
    fused = fusion.rrf({"dense": dense, "lexical": lexical})
    assert [sid for sid, _ in fused][:2] == [1, 3]  # in both lists, beating 2 and 4 found by one only
    assert {sid for sid, _ in fused} == {1, 2, 3, 4}
    assert fused[0][1] == 1 / 61 + 1 / 63


def test_weighted_sum_normalises_each_list_and_applies_weights():
    dense = [(1, 0.50), (2, 0.49), (3, 0.10)]
    lexical = [(2, 30.0), (3, 10.0)]
    fused = dict(fusion.weighted({"dense": dense, "lexical": lexical}))
    # Scores become 0..1 per list: 2 is near the top of dense and first in lexical.
    assert max(fused, key=fused.get) == 2
    assert abs(fused[1] - 1.0) < 1e-9 and abs(fused[3] - 0.0) < 1e-9
    lexical_heavy = fusion.weighted({"dense": dense, "lexical": lexical}, {"dense": 0.0, "lexical": 1.0})
    assert [sid for sid, _ in lexical_heavy][0] == 2
    assert fusion.weighted({"dense": [], "lexical": [(5, 1.0)]}) == [(5, 1.0)]


def test_ranks_report_each_lists_position():
    ranks = fusion.ranks({"dense": [(1, 0.9), (2, 0.8)], "lexical": [(2, 5.0)]})
    assert ranks == {1: {"dense": 1}, 2: {"dense": 2, "lexical": 1}}
