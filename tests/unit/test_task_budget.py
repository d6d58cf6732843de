"""MAX_TASKS_PER_CHILD counted in units of work: a search's small messages and a task's continuations
do not replace the models child, everything else counts one."""
from __future__ import annotations

import inspect
from types import SimpleNamespace

import billiard.pool
import pytest
from celery.app.task import Context

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


def _finished(queue: str, nesting: int = 0):
    """The task_postrun signal of one message, as Celery sends it in the pool child."""
    request = Context(delivery_info={"routing_key": queue}, replaced_task_nesting=nesting)
    return lambda: pool._charge(task=SimpleNamespace(request=request))


def test_billiard_still_asks_the_budget_the_way_it_is_answered():
    source = inspect.getsource(billiard.pool.Worker.workloop)
    assert "while maxtasks is None or (maxtasks and completed < maxtasks):" in source
    assert "return EX_RECYCLE if completed == maxtasks else EX_FAILURE" in source
    # The budget is set as the loop starts, after billiard's check that the limit is a plain int.
    call = inspect.getsource(billiard.pool.Worker.__call__)
    assert call.index("self.on_loop_start(") < call.index("self.workloop(")


def test_interactive_messages_cost_a_share_and_continuations_nothing(usage):
    for finished in (_finished("interactive"), _finished("models"), _finished("models", nesting=1),
                     _finished("docs"), _finished("interactive", nesting=2)):
        finished()
    assert usage.spent == 2050  # thousandths: 0.05 + 1 + 0 + 1 + 0


def test_a_child_serving_searches_is_not_replaced_every_few_dozen_messages(usage):
    budget = pool.TaskBudget(50)
    assert _child_loop(budget, [_finished("interactive")] * 400) == (400, False)
    assert usage.spent == 20 * pool.MILLI
    # With those 400, exactly 1,000 interactive messages spend the budget: no float drift ends it early.
    assert _child_loop(budget, [_finished("interactive")] * 601) == (600, True)


def test_the_child_leaves_once_its_weighted_budget_is_spent_and_says_it_recycled(usage):
    budget = pool.TaskBudget(3)
    work = [_finished("models"), _finished("models", nesting=1), _finished("interactive"), _finished("interactive"),
            _finished("models"), _finished("models"), _finished("models")]
    # models, its continuation (free), two searches' messages, then the third task spends the budget.
    assert _child_loop(budget, work) == (6, True)


def test_a_cost_outside_zero_to_one_is_refused():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="INTERACTIVE_TASK_COST"):
            pool.interactive_cost(bad)
    assert pool.interactive_cost(0.0) == 0.0 and pool.interactive_cost(1.0) == 1.0


def test_the_pool_keeps_the_plain_limit_and_the_child_gets_the_budget():
    worker = pool.BudgetWorker.__new__(pool.BudgetWorker)
    worker.maxtasks, worker.outq = 50, SimpleNamespace(put=lambda message: None)
    assert type(worker.maxtasks) is int
    worker.on_loop_start(pid=1)
    assert isinstance(worker.maxtasks, pool.TaskBudget) and int(worker.maxtasks) == 50


def test_a_worker_with_a_bad_cost_refuses_to_start():
    from docenrich.cli.worker import worker_argv

    settings = SimpleNamespace(docs_processes=1, interactive_task_cost=2.0, worker_log_file=None,
                               max_tasks_per_child=50)
    with pytest.raises(SystemExit, match="between 0 and 1"):
        worker_argv("models", settings, None, None, [])
    settings.interactive_task_cost = 0.05
    assert "--max-tasks-per-child=50" in worker_argv("models", settings, None, None, [])
