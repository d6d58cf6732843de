"""The command line `flask --app app docenrich …`: ingest as a subprocess (interrupted with SIGINT,
then run again), and search, export, status and reembed through Flask's CLI runner."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid

import pyarrow.parquet as pq
import pytest

from tests.helpers.env import ROOT, TEST_ENV, corpus_file
from tests.helpers.pdfs import pdf_with_text
from tests.helpers.wait import wait_for
from tests.helpers.web import make_app, wait_ready

PDFS = [
    "001-trivial/minimal-document.pdf",
    "002-trivial-libre-office-writer/002-trivial-libre-office-writer.pdf",
    "006-pdflatex-outline/pdflatex-outline.pdf",
    "016-libre-office-link/libre-office-link.pdf",
    "021-pdfa/crazyones-pdfa.pdf",
]
PASSWORD = "005-libreoffice-writer-password/libreoffice-writer-password.pdf"
# Runs the command line and says, at exit, which heavy modules it imported.
WRAPPER = """
import atexit, sys
heavy = ("torch", "sentence_transformers", "docenrich.tasks", "docenrich.models.manager")
atexit.register(lambda: sys.stderr.write("HEAVY:" + ",".join(m for m in heavy if m in sys.modules) + "\\n"))
from flask.cli import main
sys.argv = ["flask", "--app", "app", "docenrich", *sys.argv[1:]]
main()
"""


@pytest.fixture()
def folder(tmp_path):
    """Corpus PDFs in a folder with a sub-folder, a refused PDF and a file that is not one."""
    root = tmp_path / "papers"
    (root / "sub").mkdir(parents=True)
    for i, rel in enumerate(PDFS):
        shutil.copy(corpus_file(rel), (root / "sub" if i % 2 else root) / corpus_file(rel).name)
    shutil.copy(corpus_file(PASSWORD), root / "locked.pdf")
    (root / "fake.pdf").write_text("this is not a PDF")
    (root / "notes.txt").write_text("ignored: folders contribute their *.pdf files")
    return root


def cli(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRAPPER, *args], cwd=ROOT, env={**os.environ, **TEST_ENV, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_ingest_interrupted_then_run_again_redoes_nothing(worker, folder):
    app = make_app()
    store = app.extensions["docenrich"].store
    collection = f"papers-{uuid.uuid4().hex[:6]}"
    # With room for two waiting documents the run stops to wait for the queue: interrupt it there.
    first = cli("ingest", str(folder), "--collection", collection, MAX_QUEUED_DOCUMENTS="2")
    seen = []
    for line in first.stderr:
        seen.append(line)
        if "already waiting to be processed" in line:
            first.send_signal(signal.SIGINT)
            break
    out, err = first.communicate(timeout=60)
    err = "".join(seen) + err
    assert first.returncode == 130, err
    assert "Interrupted. Run the same command again" in out
    stored_first = {d.id: d.created_at for d in store.list_documents([collection])}
    assert 1 <= len(stored_first) < len(PDFS), out
    assert "HEAVY:\n" in err, "the command line imported worker-side modules"

    second = cli("ingest", str(folder), "--collection", collection, "--wait")
    out, err = second.communicate(timeout=600)
    assert second.returncode == 1, out + err  # two files are refused, so the exit status says so
    assert f"{len(stored_first)} already stored" in out, out
    assert f"{len(PDFS) - len(stored_first)} added" in out, out
    assert f"Processed: {len(PDFS)} ready, 0 failed" in out, out
    assert "refused" in out and "locked.pdf: " in out and "password" in out.lower()
    assert "fake.pdf: " in out and "notes.txt" not in out
    assert "overall [" in err and "HEAVY:\n" in err
    docs = store.list_documents([collection])
    assert len(docs) == len(PDFS) and all(d.state == "ready" for d in docs)
    # The first run's documents were not stored again.
    assert {d.id: d.created_at for d in docs if d.id in stored_first} == stored_first

    updated = {d.id: d.updated_at for d in docs}
    third = cli("ingest", str(folder / "*.pdf"), str(folder / "sub"), "--collection", collection, "--wait")
    out, _ = third.communicate(timeout=120)
    assert f"0 added, 0 retried, {len(PDFS)} already stored, 2 refused" in out, out
    assert {d.id: d.updated_at for d in store.list_documents([collection])} == updated


@pytest.fixture(scope="module")
def searched(worker):
    app = make_app()
    client = app.test_client()
    tag = uuid.uuid4().hex[:6]
    response = client.post("/api/documents", content_type="multipart/form-data", data={
        "file": [(io.BytesIO(pdf_with_text(f"Cartographers {tag} drew the coastline of the northern fjords.")),
                  f"maps-{tag}.pdf")], "collection": f"maps-{tag}"})
    doc = wait_ready(client, response.get_json()["documents"][0]["id"])
    return app, tag, doc


@pytest.mark.slow
def test_search_prints_a_table_or_json(searched):
    app, tag, doc = searched
    runner = app.test_cli_runner()
    result = runner.invoke(args=["docenrich", "search", f"coastline fjords {tag}", "-c", f"maps-{tag}", "--no-rerank"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["#", "score", "document", "page", "text"]
    assert doc["filename"] in lines[1] and tag in lines[1]
    result = runner.invoke(args=["docenrich", "search", f"coastline {tag}", "--collection", f"maps-{tag}", "--json"])
    body = json.loads(result.output)
    assert [r["document_id"] for r in body["results"]] == [doc["id"]]
    assert body["results"][0]["page"] == 1 and 0 < body["results"][0]["score"] <= 1
    bad = runner.invoke(args=["docenrich", "search", "x", "--collection", "a/b"])
    assert bad.exit_code == 2 and "collection name" in bad.output


@pytest.mark.slow
def test_export_status_and_reembed(searched, tmp_path):
    app, tag, doc = searched
    runner = app.test_cli_runner()
    target = tmp_path / "maps.parquet"
    result = runner.invoke(args=["docenrich", "export", "--collection", f"maps-{tag}", "--format", "parquet", "-o", str(target)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(target)
    assert set(table.column("document_id").to_pylist()) == {doc["id"]} and table.num_rows == doc["snippet_count"]
    result = runner.invoke(args=["docenrich", "export", "--document", doc["id"]])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == doc["snippet_count"] and all(r["embedding"] for r in rows)
    assert runner.invoke(args=["docenrich", "export"]).exit_code == 2

    # The app caches the workers' published status for a few seconds.
    status = wait_for(lambda: (lambda s: s if s["workers"]["main@test"]["model"] else None)(
        json.loads(runner.invoke(args=["docenrich", "status", "--json"]).output)), 15, 1.0, "a resident model")
    assert set(status["queues"]) == {"interactive", "models", "docs"}
    assert status["collections"][f"maps-{tag}"]["documents"] == 1
    text = runner.invoke(args=["docenrich", "status"]).output
    assert "main@test: holds the" in text and f"maps-{tag} (1)" in text

    result = runner.invoke(args=["docenrich", "reembed"])
    assert result.exit_code == 0 and "already has a vector" in result.output
