"""Start a docenrich Celery worker with the right flags.

    docenrich worker                              # model worker + document work (one process pool child)
    docenrich worker --role models                # only model work, one per GPU
    docenrich worker --role docs --concurrency 4  # CPU-only document work
                                                  # (default DOCS_CONCURRENCY, else half the CPUs)

Extra arguments pass through to `celery worker`. `python start_celery_worker.py` is the same command.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from docenrich.config import PROJECT_DIR, get_settings

log = logging.getLogger(__name__)

# `models` and `docs` together consume what `all` consumes (tests/unit/test_run_config.py checks it).
ROLE_QUEUES = {
    "all": "interactive,models,docs",
    "models": "interactive,models",
    "docs": "docs",
}


def worker_argv(role: str, settings, concurrency: int | None, name: str | None, extra: list[str]) -> list[str]:
    """The `celery worker` command line for a role."""
    concurrency = concurrency or (1 if role != "docs" else settings.docs_processes)
    if role != "docs" and concurrency != 1:
        raise SystemExit("a model worker runs at concurrency 1: it keeps one model on its device")
    from docenrich.cli.pool import interactive_cost

    try:
        interactive_cost(settings.interactive_task_cost)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    log_file = settings.worker_log_file
    if log_file and not os.path.isabs(log_file):
        log_file = str(PROJECT_DIR / log_file)
    argv = [
        "worker",
        "--pool=custom",  # docenrich.cli.pool.RecyclingTaskPool, through CELERY_CUSTOM_WORKER_POOL
        f"--concurrency={concurrency}",
        f"--max-tasks-per-child={settings.max_tasks_per_child}",
        f"--queues={ROLE_QUEUES[role]}",
        f"--hostname={name or f'{role}@{socket.gethostname()}'}",
        "--loglevel=INFO",
        "--events",
        "--without-gossip",
        "--without-mingle",
    ]
    return argv + list(extra)


def configure_logging(log_file: str | None) -> None:
    """Log to the console and to the worker log file."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        path = log_file if os.path.isabs(log_file) else str(PROJECT_DIR / log_file)
        handlers.append(logging.FileHandler(path))
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s", handlers=handlers
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the role and flags, refuse root without C_FORCE_ROOT, and run `celery worker`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=sorted(ROLE_QUEUES), default=get_settings().docenrich_worker_role)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--name", default=None, help="worker node name (default ROLE@host)")
    args, extra = parser.parse_known_args(argv)

    settings = get_settings()
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not os.environ.get("C_FORCE_ROOT"):
        sys.stderr.write(
            "Refusing to run as root: this worker accepts pickled messages, so anyone who can write to\n"
            "Redis could run code as root. Run it as an ordinary user, or set C_FORCE_ROOT=1 if you\n"
            "accept that risk (containers, CI).\n"
        )
        return 2
    # The role reaches the worker's code through the settings, read again with it set.
    os.environ["DOCENRICH_WORKER_ROLE"] = args.role
    os.environ["CELERY_CUSTOM_WORKER_POOL"] = "docenrich.cli.pool:RecyclingTaskPool"
    get_settings.cache_clear()
    configure_logging(settings.worker_log_file)
    from docenrich.celery_app import celery_app

    argv = worker_argv(args.role, settings, args.concurrency, args.name, extra)
    if args.role == "docs" and settings.docs_nice:
        # PDF work is background work: on a shared machine the model worker (a search's embedding
        # and rerank) and the web processes get the CPU first.
        os.nice(settings.docs_nice)
    log.info("starting celery %s", " ".join(argv))
    celery_app.worker_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
