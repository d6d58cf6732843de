"""The web app: `create_app` with its blueprints (pages, health, API, collections, OpenAPI, metrics,
status), auth, errors and presenters, and the `flask --app app docenrich` command group."""
from __future__ import annotations

import logging
import secrets
from dataclasses import fields

from flask import Flask

from docenrich.config import PROJECT_DIR, Settings, get_settings
from docenrich.web.api import api
from docenrich.web.auth import csrf_token
from docenrich.web.collections import collections
from docenrich.web.errors import register_errors
from docenrich.web.health import health, status_notices
from docenrich.web.metrics import metrics
from docenrich.web.openapi import openapi
from docenrich.web.pages import highlight, pages, require_login, security_headers
from docenrich.web.services import Services
from docenrich.web import trust
from docenrich.web.status import status, when

log = logging.getLogger(__name__)

__all__ = ["create_app", "highlight"]


def _config_from_settings(s: Settings) -> dict:
    values = {f.name.upper(): getattr(s, f.name) for f in fields(s)}
    values["SECRET_KEY"] = s.secret_key or None
    return values


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings (defaults, `.env`, environment), then FLASK_* variables, then test_config."""
    app = Flask("docenrich", root_path=str(PROJECT_DIR))
    app.config.from_mapping(
        _config_from_settings(get_settings()),
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
        MAX_UPLOAD_FILES=10,
    )
    app.config.from_prefixed_env()
    if test_config:
        app.config.from_mapping(test_config)
    if not app.config["SECRET_KEY"]:
        log.warning("SECRET_KEY is not set: using a random one, so sessions end when the app restarts")
        app.config["SECRET_KEY"] = secrets.token_hex(32)
    # One upload cap, derived from the setting wherever it was changed last.
    app.config["MAX_UPLOAD_BYTES"] = int(app.config["MAX_UPLOAD_MB"]) * 1024 * 1024
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        # Refuse oversized requests before reading them; 1 MiB covers the multipart framing.
        app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_UPLOAD_BYTES"] * int(app.config["MAX_UPLOAD_FILES"]) + 1024 * 1024
    app.json.sort_keys = False

    app.extensions["docenrich"] = Services(app.config)
    for blueprint in (api, collections, openapi, health, metrics, status, pages):
        app.register_blueprint(blueprint)
    trust.init_app(app)
    app.before_request(require_login)
    app.after_request(security_headers)
    app.context_processor(lambda: {"csrf_token": csrf_token, "status_notices": status_notices})
    app.jinja_env.filters["highlight"] = highlight
    app.jinja_env.filters["when"] = when
    register_errors(app)
    # Imported here: the commands use the web app's pieces, and the web app does not need them to serve.
    from docenrich.cli.commands import docenrich_cli

    app.cli.add_command(docenrich_cli)
    return app
