"""Micro-batches of a long embedding are sized by text length, so short queries do not skew them."""
from __future__ import annotations


def test_micro_batches_are_sized_by_text_length_so_queries_do_not_skew_them():
    from docenrich.config import get_settings
    from docenrich.tasks.bounded import _Pace

    budget = get_settings().embed_micro_batch_seconds
    pace = _Pace()
    passages, queries = ["lorem ipsum " * 100] * 32, ["where is it?"] * 32
    assert pace.size("m", passages, 32) == 4  # nothing measured yet: a small first micro-batch
    pace.record("m", passages[:4], budget)  # four passages took the whole budget
    assert pace.size("m", passages, 32) in (3, 4) and pace.size("m", queries, 32) == 32  # 4, give or take rounding
    # Queries take a sliver of the time a passage does; counted per text they would make the next
    # micro-batch of passages far too long (32 of them), counted per character they do not.
    for _ in range(5):
        pace.record("m", queries[:1], budget * (12 + 64) / (4 * (1200 + 64)))
    assert pace.size("m", passages, 32) in (3, 4)
    assert pace.size("m", passages[:2], 32) == 2 and pace.size("m", [], 32) == 1
