"""Dense vector search held by the process, over the vectors the SQLite store keeps.

`VectorIndex` (memory.py) reads every vector of an embedder into a numpy matrix of its own;
`MappedIndex` (mapped.py) searches the vector files every process of a host maps (files.py),
exactly or through a usearch HNSW graph. See docs/vector-index.md. PostgreSQL searches in SQL
instead (storage/postgres/index.py).
"""
from __future__ import annotations

from docenrich.vectorindex.mapped import MODES, MappedIndex, sync
from docenrich.vectorindex.memory import VectorIndex, VectorSource

__all__ = ["MODES", "MappedIndex", "VectorIndex", "VectorSource", "sync"]
