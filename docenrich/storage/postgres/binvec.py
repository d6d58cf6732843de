"""Vectors sent to PostgreSQL in pgvector's binary form, not as text.

pgvector's SQLAlchemy type sends a vector as the text "[0.0123,...]": formatting 1,024 floats in
Python and parsing them again in the server cost more than the rest of a batch's insert (a
200-snippet batch of 1,024-d vectors spent 2.1 of its 2.3 s on them). The binary form is what
pgvector's vector_recv reads: the dimension and an unused word (uint16 each), then big-endian
float32s. The parameter is cast to vector in the SQL, so the server knows its type without a
type lookup on every connection.
"""
from __future__ import annotations

import struct

import numpy as np
import sqlalchemy as sa
from pgvector.sqlalchemy import VECTOR
from psycopg import adapters
from psycopg.adapt import Dumper
from psycopg.pq import Format


class BinaryVector:
    """A float32 vector, ready to be sent as pgvector's binary `vector`."""

    __slots__ = ("data",)

    def __init__(self, vec: np.ndarray):
        """Encode vec (any float array, flattened)."""
        v = np.asarray(vec, dtype=">f4").reshape(-1)
        self.data = struct.pack(">HH", len(v), 0) + v.tobytes()


class _BinaryVectorDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: BinaryVector) -> bytes:
        return obj.data


adapters.register_dumper(BinaryVector, _BinaryVectorDumper)


class VectorColumn(VECTOR):
    """pgvector's `vector` column type, bound as BinaryVector values (and read as pgvector's type reads it)."""

    cache_ok = True

    def bind_processor(self, dialect):
        return None

    def bind_expression(self, bindvalue):
        return sa.cast(bindvalue, VECTOR())
