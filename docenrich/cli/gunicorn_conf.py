"""gunicorn's configuration for the web app: `gunicorn -c python:docenrich.cli.gunicorn_conf docenrich.web.wsgi:app`.

Read from the settings (defaults, `.env`, environment): WEB_HOST/WEB_PORT to bind,
WEB_WORKERS processes of WEB_THREADS threads each (gthread), WEB_GRACEFUL_TIMEOUT seconds
for requests in flight when stopping or reloading. Signals to the master: SIGTERM stops
gracefully, SIGINT/SIGQUIT stop at once, SIGHUP reloads (new workers with the current
settings and code, then the old ones finish their requests and exit). Extra gunicorn flags
can be passed in GUNICORN_CMD_ARGS.

This module is read by the master process, so it imports nothing of the web app and leaves
the environment as it found it (but for SECRET_KEY): each worker imports the app and reads the
settings after it is forked, so a SIGHUP brings up workers with the app's current code and
`.env`. The bind address, the number of workers and docenrich.config (imported here) are read
once, at start.
"""
from __future__ import annotations

import logging
import os
import secrets

from dotenv import dotenv_values

from docenrich.config import PROJECT_DIR, load_settings

log = logging.getLogger(__name__)

# Read without loading `.env` into the master's environment, which every worker would inherit
# and then prefer over a `.env` edited before a reload.
_settings = load_settings(env={**dotenv_values(PROJECT_DIR / ".env"), **os.environ})

bind = [f"{_settings.web_host}:{_settings.web_port}"]
workers = max(1, _settings.web_workers)
threads = max(1, _settings.web_threads)
worker_class = "gthread"
# Workers import the app after forking: no database or Redis connection is ever shared by two processes.
preload_app = False
graceful_timeout = _settings.web_graceful_timeout
# gthread workers keep heart-beating while a request waits (a search may wait SEARCH_TIMEOUT on
# the model worker), so this only catches a stuck process.
timeout = max(60, int(_settings.search_timeout) * 2)
keepalive = 5
accesslog = "-"
errorlog = "-"
loglevel = "info"
# When, which worker process, whom, what, the answer, its size, how long it took, and the client.
access_log_format = '%(t)s %(p)s %(h)s "%(r)s" %(s)s %(B)sB %(M)sms "%(a)s"'
# gunicorn 25+ opens a control socket at one path per user by default: two servers on one host
# (several ports, or tests) would fight over it, and signals already do what docenrich needs.
control_socket_disable = True
proc_name = "docenrich-web"


def on_starting(server) -> None:
    """Before any worker is forked: give them all one SECRET_KEY, so a session made by one is valid in all."""
    if _settings.secret_key or os.environ.get("SECRET_KEY"):
        return
    # Workers inherit the master's environment; without this each would invent its own key.
    os.environ["SECRET_KEY"] = secrets.token_hex(32)
    server.log.warning("SECRET_KEY is not set: this server's workers share a random one, so sessions end when it "
                       "restarts and are not valid on other hosts. Set SECRET_KEY (the same on every host).")
