"""The docenrich web app: `python app.py` serves it (Flask's development server).

The command line is `docenrich …`; `flask --app app docenrich …` runs the same commands.

The app is built by `docenrich.web.create_app`, following Flask's application-factory pattern.
"""
import logging

from docenrich.config import get_settings
from docenrich.web import create_app, highlight  # noqa: F401

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    create_app().run(host=settings.web_host, port=settings.web_port, threaded=True)
