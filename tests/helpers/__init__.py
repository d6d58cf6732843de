"""Helpers shared by every tier of the tests: the test environment, waiting on a condition,
PDF builders, the web app in this process, worker subprocesses and model checkpoints."""
