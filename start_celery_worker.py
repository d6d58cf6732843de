"""Start a docenrich Celery worker with the right flags: the same as `docenrich worker`.

    python start_celery_worker.py                 # model worker + document work (one process pool child)
    python start_celery_worker.py --role models   # only model work, one per GPU
    python start_celery_worker.py --role docs --concurrency 4   # CPU-only document work

Extra arguments pass through to `celery worker`. The code lives in `docenrich.cli.worker`.
"""
import sys

from docenrich.cli.worker import ROLE_QUEUES, main, worker_argv  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
