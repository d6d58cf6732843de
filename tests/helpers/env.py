"""The test environment: paths, the session's Redis address and the settings every process of
the tests sees. Importing this module sets them in os.environ, so it must be imported before any
project module reads its settings (tests/conftest.py imports it first)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from docenrich.cli.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
CORPUS = (ROOT / ".." / "shared" / "corpus" / "wild-pdfs").resolve()

SESSION_DIR = Path(tempfile.mkdtemp(prefix="docenrich-tests-"))
REDIS_PORT = free_port()
REDIS_PASSWORD = "test-password"
REDIS_URL = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{REDIS_PORT}/0"
RERANKER_DIR = SESSION_DIR / "reranker"

TEST_ENV = {
    "REDIS_URL": REDIS_URL,
    "DATA_DIR": str(SESSION_DIR / "data"),
    "EMBEDDER_MODEL": "bundled",
    "RERANKER_MODEL": str(RERANKER_DIR),
    "MODEL_DEVICE": "cpu",
    "WORKER_LOG_FILE": str(SESSION_DIR / "worker.log"),
    "SEARCH_TIMEOUT": "60",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "C_FORCE_ROOT": "1",
}
os.environ.update(TEST_ENV)


def corpus_file(relative: str) -> Path:
    """A file of the shared PDF corpus, or a skip saying it is absent."""
    path = CORPUS / relative
    if not path.exists():
        pytest.skip(f"corpus file {relative} not found under {CORPUS} (the shared corpus is absent)")
    return path
