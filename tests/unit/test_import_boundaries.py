"""What the entry points import: the Celery configuration neither torch nor Flask, the gunicorn
configuration nothing of the web app (each in a fresh interpreter)."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers.env import ROOT, TEST_ENV


def test_celery_config_imports_without_torch_or_flask():
    code = (
        "import sys, time; t = time.perf_counter(); import celery_config; "
        "print(round(time.perf_counter() - t, 3)); "
        "assert 'torch' not in sys.modules and 'flask' not in sys.modules, 'heavy import'"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **TEST_ENV},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_the_server_config_imports_nothing_of_the_web_app():
    """The master reads the config; the app must load in each worker after the fork, or a reload
    (SIGHUP) would keep serving the old code and settings."""
    code = ("import sys, docenrich.cli.gunicorn_conf as c; "
            "print(c.worker_class, c.preload_app, c.workers, sorted(m for m in sys.modules if m.startswith('docenrich.web')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "WEB_WORKERS": "3"})
    assert out.stdout.split() == ["gthread", "False", "3", "[]"], out.stdout + out.stderr
