"""The single-model worker, through a real Redis and real worker subprocesses."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.helpers.env import ROOT, TEST_ENV
from tests.helpers.wait import wait_for
from tests.helpers.workers import WorkerProcess

pytestmark = pytest.mark.slow


def test_embedding_round_trip_matches_direct_library_call(worker, bundled_model):
    from sentence_transformers import SentenceTransformer

    from celery_worker import get_sentence_embedding_task

    # The reference snippet from the system description, as written.
    single = get_sentence_embedding_task.delay("test").get(timeout=120)
    texts = ["The quick brown fox.", "Ein deutscher Satz über Topologie.", ""]
    batch = get_sentence_embedding_task.delay(texts).get(timeout=120)

    direct = SentenceTransformer(bundled_model, device="cpu").encode(
        ["test", *texts], normalize_embeddings=True, convert_to_numpy=True
    )
    assert single.shape == (384,) and single.dtype == np.float32
    assert batch.shape == (3, 384) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    cosines = (np.vstack([single, batch]) * direct).sum(axis=1)
    assert cosines.min() > 0.9999, cosines


def test_rerank_scores_match_direct_cross_encoder(worker, reranker_checkpoint):
    import torch
    from sentence_transformers import CrossEncoder

    from celery_worker import rerank_task

    query = "How are PDFs split into snippets?"
    passages = ["PDF files are split into snippets with text and images.", "Bananas are yellow.", "Snippets."]
    raw = rerank_task.delay(query, passages).get(timeout=120)
    normalized = rerank_task.delay(query, passages, normalize=True).get(timeout=120)

    model = CrossEncoder(str(reranker_checkpoint), device="cpu")
    direct = model.predict([(query, p) for p in passages], activation_fn=torch.nn.Identity())
    assert raw.shape == (3,)
    np.testing.assert_allclose(raw, direct, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(normalized, 1 / (1 + np.exp(-direct)), rtol=1e-4, atol=1e-5)
    assert len(set(np.round(raw, 4))) == 3, "a seeded head must give distinct scores"


def test_bge_api_embeds_and_reranks(worker):
    import bge

    vectors = bge.embed(["alpha", "beta"])
    assert vectors.shape == (2, 384)
    query = bge.get_sentence_embedding("alpha")
    assert float(query @ vectors[0]) > 0.999
    vector, model = bge.embed_query("alpha")
    assert model == "bundled:all-MiniLM-L6-v2" and vector.shape == (384,)
    result = bge.rerank("alpha", ["beta", "alpha", "gamma"])
    assert sorted(result.order.tolist()) == [0, 1, 2]
    assert np.all((result.normalized > 0) & (result.normalized < 1))


def test_one_model_resident_at_a_time(worker, celery_app):
    from celery_worker import get_sentence_embedding_task, rerank_task

    seen = []
    for step in ("embed", "rerank", "embed"):
        if step == "embed":
            get_sentence_embedding_task.delay("switch").get(timeout=120)
        else:
            rerank_task.delay("q", ["p"]).get(timeout=120)
        status = worker.status(celery_app)
        assert len(status["loaded"]) == 1, status
        seen.append(status["resident"])
    assert seen == ["embedder", "reranker", "embedder"]
    log = worker.log_text()
    assert re.search(r"model reranker \(.*\) resident on cpu after [\d.]+s \(was: embedder\)", log), log[-2000:]
    assert re.search(r"model embedder unloaded from cpu in [\d.]+s", log)
    # The Celery-native way to ask which model is loaded.
    replies = celery_app.control.broadcast("current_model", reply=True, timeout=2, destination=[worker.hostname])
    assert replies and replies[0][worker.hostname]["resident"] == "embedder"


def test_bad_input_fails_once_with_a_readable_error(worker):
    from celery_worker import get_sentence_embedding_task
    from docenrich.models import BadInput

    result = get_sentence_embedding_task.delay(12345)
    with pytest.raises(BadInput, match="must be a string or a list of strings"):
        result.get(timeout=60)
    assert result.state == "FAILURE"
    assert (result.retries or 0) == 0


def test_transient_failures_are_retried_with_backoff(worker):
    from tests.fault_tasks import flaky_embedding

    result = flaky_embedding.delay("retry me", 2)
    vector = result.get(timeout=120)
    assert vector.shape == (384,)
    # Results are not extended (they carry no retry count): the worker's log tells the retries.
    log = worker.log_text()
    assert log.count(f"{result.id}] retry: Retry in") == 2, log[-3000:]
    assert "attempt 1" in log and "attempt 2" in log


def test_interactive_work_jumps_the_ingestion_backlog(worker, clean_queues):
    import bge
    from celery_worker import get_sentence_embedding_task

    texts = [f"backlog sentence number {i} " * 20 for i in range(32)]
    backlog = [get_sentence_embedding_task.apply_async((texts,), queue="models") for _ in range(25)]
    wait_for(lambda: f"[{backlog[0].id}] received" in worker.log_text(), 30, 0.05,
             "the worker to take the first backlog task")
    started = time.perf_counter()
    bge.get_sentence_embedding("urgent query", timeout=120)
    waited = time.perf_counter() - started
    pending = sum(1 for r in backlog if not r.ready())
    for r in backlog:
        r.get(timeout=300)
    # Strict queue order: the query ran after at most the one task already in progress.
    assert pending >= 20, f"only {pending} of 25 backlog tasks were still pending ({waited:.2f}s wait)"


def test_killed_child_mid_task_is_redelivered_and_completes(worker, celery_app):
    from tests.fault_tasks import slow_embedding

    result = slow_embedding.delay("survive", 4.0)
    meta = wait_for(
        lambda: result.info if result.state == "PROGRESS" else None, 60, what="the task to start and report its pid"
    )
    os.kill(meta["pid"], signal.SIGKILL)
    out = result.get(timeout=180)
    assert out["pid"] != meta["pid"], "the task must have been run again in a new child"
    assert out["embedding"].shape == (384,)


def test_task_that_always_kills_its_worker_ends_failed(worker):
    from celery_worker import WorkerLostTooOften
    from tests.fault_tasks import kill_worker

    result = kill_worker.delay()
    with pytest.raises(WorkerLostTooOften, match="giving up after 3 deliveries"):
        result.get(timeout=240)
    # The worker survived the three crashes and still serves.
    from celery_worker import ping_task

    assert ping_task.delay("after").get(timeout=120)["payload"] == "after"


@pytest.fixture()
def recycling_worker(redis_server, reranker_checkpoint):
    """A second worker on its own Redis database, recycling its child every 3 tasks."""
    from celery_config import make_celery
    from docenrich.config import load_settings

    url = redis_server.url[:-1] + "1"
    app = make_celery(load_settings(redis_url=url))
    proc = WorkerProcess("recycle", env={"REDIS_URL": url}, args=["--max-tasks-per-child=3"]).start(app)
    yield proc, app
    proc.stop()


def test_max_tasks_per_child_recycles_without_losing_tasks(recycling_worker):
    proc, app = recycling_worker
    first = proc.child_pids()
    vectors = []
    for i in range(10):
        vectors.append(app.send_task("docenrich.get_sentence_embedding", args=(f"sentence {i}",)).get(timeout=120))
    assert all(v.shape == (384,) for v in vectors)
    pids = {app.send_task("docenrich.ping").get(timeout=60)["pid"] for _ in range(4)}
    assert proc.child_pids() != first
    assert len(pids) >= 2, "four tasks across a recycle boundary must see two children"


def _celery_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "celery_config:celery_app", *args],
        cwd=ROOT, env={**os.environ, **TEST_ENV}, capture_output=True, text=True, timeout=timeout,
    )


def test_celery_status_and_inspect_list_the_worker(worker):
    status = _celery_cli("status")
    assert status.returncode == 0, status.stderr
    assert worker.hostname in status.stdout
    inspect = _celery_cli("inspect", "current_model", "-d", worker.hostname)
    assert inspect.returncode == 0, inspect.stderr
    assert "resident" in inspect.stdout


def test_celery_events_dump_shows_task_events(worker):
    from celery_worker import ping_task

    dump = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_config:celery_app", "events", "--dump"],
        cwd=ROOT, env={**os.environ, **TEST_ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: [lines.append(line) for line in dump.stdout], daemon=True)
    reader.start()
    try:
        # The dump receives events once the worker's heartbeat (every 2 s) shows in it.
        wait_for(lambda: any("] heartbeat" in line for line in lines), 60, 0.1, "the dump to see a worker heartbeat")
        result = ping_task.delay("watched")
        result.get(timeout=60)
        wait_for(lambda: result.id in (text := "".join(lines)) and "succeeded" in text.lower(), 30, 0.1,
                 "the dump to show the task succeeding")
    finally:
        dump.send_signal(signal.SIGINT)
        try:
            dump.wait(10)
        except subprocess.TimeoutExpired:
            dump.kill()
            dump.wait()
        reader.join(10)
    out = "".join(lines)
    assert "docenrich.ping" in out and result.id in out, out[-3000:]
    assert "task-succeeded" in out or "succeeded" in out.lower()


def test_enrich_snippets_fills_embeddings_and_images(worker, bundled_model):
    from PIL import Image
    from sentence_transformers import SentenceTransformer

    from celery_worker import enrich_snippets_task
    from docenrich.records import Snippet

    picture = Image.new("RGB", (120, 40), (200, 30, 30))
    given = [Snippet(text="A caller-made snippet with its own picture.", image=picture),
             Snippet(text="Another one, text only.", page=2, meta={"heading": "Results"})]
    enriched = enrich_snippets_task.delay(given).get(timeout=120)

    assert [s.text for s in enriched] == [s.text for s in given]
    assert all(s.embedding.shape == (384,) and s.embedding_model == "bundled:all-MiniLM-L6-v2" for s in enriched)
    assert enriched[0].image.size == (120, 40), "the caller's image comes back as a PIL image"
    assert enriched[1].image is not None and enriched[1].image.size[0] > 0, "an image is filled in"
    direct = SentenceTransformer(bundled_model, device="cpu").encode(
        ["A caller-made snippet with its own picture.", "Results\nAnother one, text only."], normalize_embeddings=True
    )
    assert float(enriched[0].embedding @ direct[0]) > 0.9999
    assert float(enriched[1].embedding @ direct[1]) > 0.9999, "a heading is embedded with its text"
