"""Command lines: the whole service (`run`), a worker, Flower, a local Redis, and Flask commands."""
