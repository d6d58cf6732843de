"""Helpers shared by the store tests: synthetic PDFs, snippets, vectors, and what a store holds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image

from docenrich.records import Snippet

DIM = 16


def run_sql(store, statement: str, args: tuple = ()) -> list:
    """One statement in the driver's own SQL on a store's database, committed; its rows as mappings."""
    with store.engine.begin() as conn:
        result = conn.exec_driver_sql(statement, tuple(args))
        return result.mappings().all() if result.returns_rows else []


def pdf_bytes(tag: str) -> bytes:
    return f"%PDF-1.4\n% test document {tag}\n%%EOF\n".encode()


def unit(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def pattern_image(n: int) -> PIL.Image.Image:
    """A black/white 8x8 image spelling n in binary: distinct n give distinct images under any encoding."""
    img = PIL.Image.new("L", (8, 8), 255)
    img.putdata([0 if (n >> bit) & 1 else 255 for bit in range(64)])
    return img


def make_batch(
    doc_id: str,
    batch: int,
    n: int = 5,
    *,
    rng: np.random.Generator | None = None,
    model: str | None = "test-model",
    dim: int = DIM,
    image: int | None = None,
) -> list[Snippet]:
    """n snippets with ordinals batch*100 + i; the first one carries pattern_image(image) if asked."""
    rng = rng or np.random.default_rng(batch)
    out = []
    for i in range(n):
        out.append(
            Snippet(
                text=f"doc {doc_id} batch {batch} snippet {i}",
                image=pattern_image(image) if (image is not None and i == 0) else None,
                page=batch + 1,
                bbox=(1.0, 2.0, 3.0 + i, 4.0),
                document_id=doc_id,
                ordinal=batch * 100 + i,
                kind="figure" if (image is not None and i == 0) else "text",
                embedding=unit(rng, dim) if model else None,
                embedding_model=model,
                meta={"i": i},
            )
        )
    return out


def fill(st, n_docs: int, per_doc: int, *, seed: int, dim: int = DIM, model: str = "test-model") -> list[str]:
    """n_docs documents of per_doc snippets with random vectors, saved in batches of 50; their ids."""
    rng = np.random.default_rng(seed)
    ids = []
    for d in range(n_docs):
        doc, _ = st.add_document(pdf_bytes(f"{model}-{seed}-{d}"), f"{seed}-{d}.pdf")
        ids.append(doc.id)
        for b in range(0, per_doc, 50):
            st.save_batch(doc.id, b // 50, make_batch(doc.id, b // 50, n=min(50, per_doc - b), rng=rng,
                                                      model=model, dim=dim))
    return ids


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def document_info(**kw):
    from docenrich.pdf import DocumentInfo

    return DocumentInfo(**kw)


def is_postgres(st) -> bool:
    return type(st).__name__ == "PostgresStore"


def _table_names(st, table: str, column: str) -> list[str]:
    return sorted(r[column] for r in run_sql(st, f"SELECT {column} FROM {table}"))


def stored_images(st) -> list[str]:
    """Names of the image blobs the store holds: files on SQLite, rows on PostgreSQL."""
    return _table_names(st, "images", "name") if is_postgres(st) else files_in(st.data_dir / "images")


def stored_pdfs(st) -> list[str]:
    """The PDFs the store holds, as <sha256>.pdf."""
    if is_postgres(st):
        return [f"{sha}.pdf" for sha in _table_names(st, "pdfs", "sha256")]
    return files_in(st.data_dir / "pdfs")


def stored_thumbs(st, doc_id: str) -> int:
    """How many page renderings of a document the store keeps."""
    if is_postgres(st):
        return run_sql(st, "SELECT count(*) AS n FROM thumbs WHERE document_id = %s", (doc_id,))[0]["n"]
    folder = st.thumb_dir / doc_id
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def doc_with_snippets(store, n: int, embedder: str = "test-model", seed: int = 0, batch: int = 0, doc=None):
    """A document (new unless given) whose page batch `batch` holds n snippets with unit vectors of 16
    dimensions from `embedder`."""
    if doc is None:
        doc, _ = store.add_document(f"%PDF-1.4\n% doc {seed}\n%%EOF\n".encode(), f"d{seed}.pdf", batch_pages=1)
        store.begin_batches(doc.id, 1)
    rng = np.random.default_rng(seed)
    snippets = []
    for i in range(n):
        v = rng.standard_normal(16).astype(np.float32)
        snippets.append(Snippet(text=f"snippet {seed}-{i}", page=1, document_id=doc.id, ordinal=i,
                                embedding=v / np.linalg.norm(v), embedding_model=embedder))
    store.save_batch(doc.id, batch, snippets)
    return doc


def write_vector_files(directory: Path, rows: np.ndarray, first_id: int = 1, embedder: str = "m"):
    """Vector files holding `rows` (100 per document), published as one generation; the VectorFiles."""
    from docenrich.vectorindex.files import Manifest, VectorFiles

    n, dim = rows.shape
    files = VectorFiles(directory, embedder)
    changes = {"removed": [], "last_seq": 0, "ids": np.arange(n, dtype=np.int64) + first_id,
               "docs": np.array([f"{i // 100:016x}" for i in range(n)]), "matrix": rows, "max_rowid": n,
               "state": (n, 0), "pages": np.ones(n, dtype=np.int32), "kinds": ["text"] * n}
    with files.locked():
        files.publish(files.append(Manifest(embedder=embedder, dim=dim), changes, {}))
    return files
