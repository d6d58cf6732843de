"""MAX_TASKS_PER_CHILD counted in units of work: a search's small messages and a task's continuations
do not replace the models child, everything else counts one."""
from __future__ import annotations

import inspect

import billiard.pool
import pytest

from docenrich.cli import pool


@pytest.fixture
def usage(monkeypatch):
    fresh = pool.Usage()
    monkeypatch.setattr(pool, "usage", fresh)
    return fresh


def _child_loop(maxtasks, finished_messages) -> tuple[int, bool]:
    """billiard's pool child loop, as its source writes it (checked below): (messages run, recycled)."""
    completed = 0
    for charge in finished_messages:
        if not (maxtasks is None or (maxtasks and completed < maxtasks)):
            break
        charge()
        completed += 1
    else:
        if maxtasks is None or (maxtasks and completed < maxtasks):
            return completed, False
    return completed, bool(maxtasks) and completed == maxtasks


def test_billiard_still_asks_the_budget_the_way_it_is_answered():
    source = inspect.getsource(billiard.pool.Worker.workloop)
    assert "while maxtasks is None or (maxtasks and completed < maxtasks):" in source
    assert "return EX_RECYCLE if completed == maxtasks else EX_FAILURE" in source


def test_interactive_messages_cost_a_share_and_continuations_nothing(usage):
    assert usage.charge("a", "interactive", 0.05) == 0.05
    assert usage.charge("b", "models", 0.05) == 1.0
    assert usage.charge("b", "models", 0.05) == 0.0  # the same task, continued in a new message
    assert usage.charge(None, "docs", 0.05) == 1.0
    assert usage.spent == pytest.approx(2.05)


def test_a_child_serving_searches_is_not_replaced_every_few_dozen_messages(usage):
    budget = pool.TaskBudget(50)
    searches = [lambda i=i: usage.charge(f"q{i}", "interactive", 0.05) for i in range(400)]
    assert _child_loop(budget, searches) == (400, False)
    assert usage.spent == pytest.approx(20.0)


def test_the_child_leaves_once_its_weighted_budget_is_spent_and_says_it_recycled(usage):
    budget = pool.TaskBudget(3)
    work = [lambda: usage.charge("e1", "models", 0.05), lambda: usage.charge("e1", "models", 0.05),
            *(lambda i=i: usage.charge(f"q{i}", "interactive", 0.5) for i in range(2)),
            lambda: usage.charge("e2", "models", 0.05), lambda: usage.charge("never", "models", 0.05)]
    # e1, its continuation (free), two half-cost queries, e2: three tasks' worth after five messages.
    assert _child_loop(budget, work) == (5, True)


def test_the_budget_is_the_configured_int_everywhere_else():
    budget = pool.TaskBudget(50)
    assert int(budget) == 50 and f"{budget}" == "50" and hash(budget) == hash(50) and budget
    assert (budget == "50") is False
