# docenrich: one image for the web app (gunicorn) and the Celery workers (docs, models);
# compose.yaml picks the process with `command`. Build for a CUDA host with
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t docenrich:cuda .
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# tesseract reads pages that have no text layer (OCR through MuPDF); LibreOffice, headless,
# converts Office uploads to pages (docs/formats.md).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
       libreoffice-writer-nogui libreoffice-impress-nogui libreoffice-calc-nogui \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# torch first, from the index the build arg names, so that requirements.txt finds torch==2.13.0
# satisfied (the CPU build unless TORCH_INDEX names a CUDA one; its +cpu/+cuXXX local version
# outranks PyPI's plain one, as in the Makefile); then the locked versions.
COPY requirements.txt requirements.lock ./
RUN pip install --index-url "${TORCH_INDEX}" --extra-index-url https://pypi.org/simple "torch==${TORCH_VERSION}" \
    && pip install -c requirements.lock -r requirements.txt

COPY app.py bge.py celery_config.py celery_worker.py start_celery_worker.py pyproject.toml ./
COPY docenrich ./docenrich
COPY templates ./templates
COPY static ./static

# A non-root user: the workers accept pickled messages and refuse to run as root.
RUN useradd --create-home --uid 10001 docenrich \
    && mkdir -p /data /models \
    && chown docenrich:docenrich /data /models
USER docenrich

# The app runs from /app (templates and static files sit beside the package); its data and the
# model hub cache live in volumes; the worker log goes to the console, /tmp only keeps a copy.
ENV PYTHONPATH=/app \
    DATA_DIR=/data \
    HF_HOME=/models/huggingface \
    WORKER_LOG_FILE=/tmp/celery_worker.log \
    WEB_HOST=0.0.0.0 \
    WEB_PORT=8000

EXPOSE 8000
CMD ["python", "-m", "gunicorn", "-c", "python:docenrich.cli.gunicorn_conf", "docenrich.web.wsgi:app"]
