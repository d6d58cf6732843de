"""The WSGI entry of the web app for production servers: `gunicorn docenrich.web.wsgi:app`.

`make run` serves it with gunicorn and `docenrich.cli.gunicorn_conf`; `python app.py` remains
Flask's development server. Each gunicorn worker imports this module after it is forked
(no preloading), so every process opens its own store and Redis connections.
"""
from __future__ import annotations

import logging

from docenrich.web import create_app

log = logging.getLogger(__name__)

# gunicorn logs its own lines; the app's loggers need a handler of their own.
if not logging.getLogger().handlers:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")

app = create_app()
