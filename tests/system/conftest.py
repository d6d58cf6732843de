"""The system tier: the whole service as it runs, in processes: stacks of their own (Redis,
workers, web servers; tests/stack.py), gunicorn, `make run`, and the page in headless Chromium."""
from __future__ import annotations

import pytest


@pytest.fixture()
def make_stack(tmp_path):
    """make_stack(**env) -> a Stack (tests/stack.py) under tmp_path; every one is closed at teardown."""
    from tests.stack import Stack

    stacks = []

    def make(**env):
        stack = Stack(tmp_path / f"stack{len(stacks)}", **env)
        stacks.append(stack)
        return stack

    yield make
    for stack in reversed(stacks):
        stack.close()
