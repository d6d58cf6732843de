"""Exports as downloads: snippets with their vectors as JSONL or Parquet, both streamed."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from urllib.parse import quote

from flask import Response, stream_with_context
from werkzeug.http import dump_options_header

from docenrich.web.errors import ApiError

FORMATS = ("jsonl", "parquet")
ROW_GROUP = 2000


def export_response(rows: Iterable[dict], stem: str, fmt: str) -> Response:
    """rows as a streamed JSONL or Parquet download named after stem."""
    fmt = (fmt or "jsonl").lower()
    if fmt == "jsonl":
        lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        return attachment(Response(stream_with_context(lines), mimetype="application/x-ndjson"), f"{stem}.jsonl")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ApiError(415, "Parquet export needs the pyarrow package (pip install pyarrow); use format=jsonl.",
                           "pyarrow_missing") from None
        response = Response(stream_with_context(parquet_chunks(rows)), mimetype="application/vnd.apache.parquet")
        return attachment(response, f"{stem}.parquet")
    raise ApiError(400, "Unknown export format; use format=jsonl or format=parquet.", "bad_parameter")


class _Sink:
    """A write-only file that hands over what was written since the last take()."""

    closed = False

    def __init__(self):
        self._parts: list[bytes] = []
        self._position = 0

    def write(self, data) -> int:
        data = bytes(data)
        self._parts.append(data)
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


def parquet_chunks(rows: Iterable[dict]) -> Iterator[bytes]:
    """A Parquet file in pieces, one row group at a time, so memory stays bounded by a row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema(pa)
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema)
    rows = iter(rows)
    try:
        while group := list(islice(rows, ROW_GROUP)):
            table = pa.Table.from_pylist([{**r, "meta": json.dumps(r["meta"], ensure_ascii=False)} for r in group],
                                         schema=schema)
            writer.write_table(table)
            if data := sink.take():
                yield data
    finally:
        writer.close()
    yield sink.take()


def parquet_schema(pa):
    """The Parquet export's columns."""
    return pa.schema([
        ("document_id", pa.string()), ("snippet_id", pa.int64()), ("ordinal", pa.int64()), ("page", pa.int32()),
        ("bbox", pa.list_(pa.float64())), ("kind", pa.string()), ("text", pa.string()), ("meta", pa.string()),
        ("image", pa.string()), ("embedding", pa.list_(pa.float32())), ("embedder", pa.string()),
    ])


def attachment(response: Response, filename: str) -> Response:
    """The response as a download named filename (non-ASCII names included)."""
    # filename* carries non-ASCII names; the plain one is a safe ASCII stand-in.
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    response.headers["Content-Disposition"] = dump_options_header(
        "attachment", {"filename": ascii_name, "filename*": f"UTF-8''{quote(filename, safe='')}"}
    )
    return response
