"""Waiting on a condition: the one polling loop of the tests."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

# How long a small document may take to be extracted and embedded by a test worker.
INGEST_TIMEOUT = 240.0
FINISHED = ("ready", "failed")


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll predicate until it returns something truthy, and return that; TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def wait_finished(read: Callable[[], dict], timeout: float = INGEST_TIMEOUT, what: str = "the document") -> dict:
    """Poll read() (a document as the API shows it) until it is ready or failed; returns it."""
    last: dict = {}

    def finished():
        last.update(read())
        return dict(last) if last.get("state") in FINISHED else None

    try:
        return wait_for(finished, timeout, 0.3, f"{what} to finish")
    except TimeoutError:
        pytest.fail(f"{what} not finished after {timeout:g}s (state {last.get('state')}, stage {last.get('stage')!r})")


def wait_ready(read: Callable[[], dict], timeout: float = INGEST_TIMEOUT, what: str = "the document") -> dict:
    """As wait_finished, and a failed document fails the test with its error."""
    doc = wait_finished(read, timeout, what)
    if doc["state"] == "failed":
        pytest.fail(f"{what} ({doc.get('filename')}) failed: {doc.get('error')}")
    return doc
