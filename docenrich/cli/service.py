"""The commands of `docenrich` that start processes: `run` (the whole service), `web` (gunicorn)
and `worker` (a Celery worker with its role). They import nothing of the web app: a worker and
gunicorn's master must not carry it (the app loads in each web process, after the fork).
"""
from __future__ import annotations

import os
import sys

import click

from docenrich.cli.worker import ROLE_QUEUES


@click.command("run")
@click.option("--no-web", is_flag=True, help="Start Redis and the workers only.")
def run_command(no_web: bool) -> None:
    """Run the whole service in the foreground: Redis, a models and a docs worker, the web app.

    This is what `make run` starts. Ctrl-C stops the web app, then the workers, then Redis.
    """
    from docenrich.cli import run

    sys.exit(run.main(["--no-web"] if no_web else []))


@click.command("web")
def web_command() -> None:
    """Serve the web app with gunicorn on WEB_HOST:WEB_PORT (WEB_WORKERS processes x WEB_THREADS threads).

    The same server `docenrich run` starts; SIGHUP to its pid reloads it gracefully.
    """
    from docenrich.cli.run import ensure_env_secret, web_argv, with_malloc_env
    from docenrich.config import load_settings

    settings = load_settings()
    # Set before gunicorn starts, as `run` does: its processes then sign sessions with one key.
    os.environ.setdefault("SECRET_KEY", settings.secret_key or ensure_env_secret("SECRET_KEY"))
    argv = web_argv()
    sys.stdout.flush()
    os.execve(argv[0], argv, with_malloc_env(dict(os.environ)))  # gunicorn takes this process over: signals reach its master directly


@click.command("worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--role", type=click.Choice(sorted(ROLE_QUEUES)),
              help="all: models and documents; models: model work only, one per GPU; docs: PDF work, CPU only "
                   "(default: DOCENRICH_WORKER_ROLE, else all).")
@click.option("--concurrency", type=click.IntRange(min=1),
              help="Processes; 1 for a model worker, DOCS_CONCURRENCY by default for docs.")
@click.option("--name", help="The worker's node name (default ROLE@host).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker_command(role: str | None, concurrency: int | None, name: str | None, celery_args: tuple[str, ...]) -> None:
    """Start a Celery worker with its role; further arguments go to `celery worker`."""
    from docenrich.cli import worker

    argv = [*(["--role", role] if role else []), *(["--concurrency", str(concurrency)] if concurrency else []),
            *(["--name", name] if name else []), *celery_args]
    sys.exit(worker.main(argv))
