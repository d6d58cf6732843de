"""`make run`'s choices without running it: which queues the split workers consume, the worker
command lines RUN_WORKERS and DOCS_CONCURRENCY give, and the warning for a REDIS_URL without a
password."""
from __future__ import annotations

import os

import pytest


def queues(role: str) -> set[str]:
    from docenrich.cli.worker import ROLE_QUEUES

    return set(ROLE_QUEUES[role].split(","))


def test_models_and_docs_workers_together_consume_every_queue_the_all_worker_does():
    from docenrich.celery_app import ALL_QUEUES, celery_app

    assert queues("models") | queues("docs") == queues("all") == set(ALL_QUEUES)
    # The document work stays off the model worker, so extraction runs beside embedding.
    assert not queues("docs") & {"models", "interactive"}
    routed = {route["queue"] for route in celery_app.conf.task_routes.values()} | {celery_app.conf.task_default_queue}
    assert routed <= queues("models") | queues("docs"), routed


def test_run_workers_setting_picks_the_split_or_the_single_worker():
    from docenrich.cli.run import worker_commands
    from docenrich.config import DOCS_CONCURRENCY_CAP, load_settings

    split = dict(worker_commands(load_settings(env={}), host="h"))
    assert list(split) == ["models@h", "docs@h"]
    assert split["models@h"][-4:] == ["--role", "models", "--name", "models@h"]
    default = min(DOCS_CONCURRENCY_CAP, max(1, (os.cpu_count() or 2) // 2))
    assert split["docs@h"][-6:] == ["--role", "docs", "--concurrency", str(default), "--name", "docs@h"]
    three = dict(worker_commands(load_settings(env={"DOCS_CONCURRENCY": "3"}), host="h"))
    assert three["docs@h"][-3] == "3"
    single = worker_commands(load_settings(env={"RUN_WORKERS": "all"}), host="h")
    assert [name for name, _ in single] == ["all@h"] and "all" in single[0][1]
    with pytest.raises(SystemExit):
        worker_commands(load_settings(env={"RUN_WORKERS": "both"}), host="h")


def test_make_run_warns_when_redis_url_has_no_password(tmp_path, capsys):
    from docenrich.cli.run import Service, start_redis
    from docenrich.config import load_settings

    for url, warned in (("redis://10.0.0.5:6379/0", True), ("redis://:s3cret@10.0.0.5:6379/0", False)):
        service = Service()
        start_redis(load_settings(env={"REDIS_URL": url}), service, tmp_path, {})
        assert service.redis is None, "a Redis of its own is started only without REDIS_URL"
        assert ("REDIS_URL has no password" in capsys.readouterr().err) is warned, url


def test_the_service_allocator_settings_yield_to_the_environment():
    from docenrich.cli.run import MALLOC_ENV, with_malloc_env

    assert with_malloc_env({"PATH": "/bin"}) == {"PATH": "/bin", **MALLOC_ENV}
    assert with_malloc_env({"MALLOC_ARENA_MAX": "8"})["MALLOC_ARENA_MAX"] == "8"
