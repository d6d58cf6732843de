"""The Celery app: `celery -A celery_config:celery_app status|events|inspect` and Flower load it.

The app and its configuration live in `docenrich.celery_app`; this file keeps the name that
monitoring commands and existing deployments use.
"""
from docenrich.celery_app import (  # noqa: F401
    ALL_QUEUES,
    DOCS_QUEUE,
    INTERACTIVE_QUEUE,
    MODEL_STATUS_KEY,
    MODELS_QUEUE,
    celery_app,
    make_celery,
)
