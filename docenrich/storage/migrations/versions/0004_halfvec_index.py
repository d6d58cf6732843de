"""PostgreSQL: the HNSW indexes hold float16 (halfvec) where pgvector is 0.7 or newer: half the size."""
from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

log = logging.getLogger(__name__)


def upgrade() -> None:
    """Bring the vector extension up to the server's version, then rebuild each float32 HNSW index as halfvec."""
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    from docenrich.storage.postgres.index import VectorFeatures, hnsw_index_sql

    try:
        with conn.begin_nested():
            conn.exec_driver_sql("ALTER EXTENSION vector UPDATE")
    except sa.exc.DBAPIError as exc:  # not the extension's owner: keep the version there is
        log.warning("could not update the vector extension (%s); its indexes stay as they are", exc.orig)
    version = conn.exec_driver_sql("SELECT extversion FROM pg_extension WHERE extname = 'vector'").scalar()
    features = VectorFeatures.parse(version)
    if not features.halfvec:
        return
    dims = [int(d) for (d,) in conn.exec_driver_sql("SELECT DISTINCT dim FROM embedders")]
    for dim in sorted(d for d in dims if d <= features.max_dim):
        name = f"vectors_hnsw_{dim}"
        definition = conn.exec_driver_sql(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'vectors' AND indexname = %s", (name,)).scalar()
        if definition is not None and "halfvec" in definition:
            continue
        log.info("building the float16 HNSW index of the %d-dimensional vectors", dim)
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
        conn.exec_driver_sql(hnsw_index_sql(dim, half=True))
