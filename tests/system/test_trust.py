"""Trust boundaries of the running service: signed messages, Flower, the API token, and `make run`
with a root worker. (Redis' own guard is in tests/integration/test_redis_servers.py; the rules
that need no server in tests/unit/test_trust_rules.py.)

Because workers and the web app unpickle what comes out of Redis, whoever can write to
Redis can run code in them: Redis listens on loopback with a password, and signing
(SECURITY_KEY/CERTIFICATE/CERT_STORE) makes workers refuse messages from anyone without
the key.
"""
from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.helpers.env import ROOT, SESSION_DIR, TEST_ENV
from tests.helpers.network import other_addresses, refused_on
from tests.helpers.pdfs import text_pdf
from tests.helpers.wait import wait_for
from tests.helpers.workers import processes_with
from tests.stack import assert_clean_json_error, http_request, post_pdfs

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- Redis and .env


# --------------------------------------------------------------------------- message signing


def make_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A private key and a self-signed certificate; returns (key, certificate, cert store dir)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "docenrich-test-signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    store = folder / "certs"
    store.mkdir(parents=True)
    key_path, cert_path = folder / "signer.key", store / "signer.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path, store


SIGNED_CLIENT = """
import json, sys
from celery_config import celery_app
assert celery_app.conf.task_serializer == "auth", celery_app.conf.task_serializer
result = celery_app.send_task("tests.touch", args=[sys.argv[1]], queue="docs")
print(json.dumps({"result": result.get(timeout=60), "content_type": "auth"}))
"""


def test_signed_tasks_round_trip_and_unsigned_pickle_is_never_run(make_stack, tmp_path):
    try:
        import cryptography
    except ImportError:
        pytest.skip("message signing needs the `cryptography` package, which requirements.txt does not list "
                    "(Celery's auth serializer imports it): add cryptography to requirements.txt")
    key, cert, store = make_certificate(tmp_path / "pki")
    signing = {"SECURITY_KEY": str(key), "SECURITY_CERTIFICATE": str(cert), "SECURITY_CERT_STORE": str(store)}
    if os.environ.get("PYTHONPATH"):
        signing["PYTHONPATH"] = os.environ["PYTHONPATH"]
    stack = make_stack(**signing)  # the worker signs and verifies; this test process's app does not sign
    worker = stack.worker("signed", "docs")
    from celery_config import make_celery
    from docenrich.config import load_settings

    unsigned_app = make_celery(load_settings(env={**TEST_ENV, "REDIS_URL": stack.redis.url}))
    assert unsigned_app.conf.task_serializer == "pickle"

    # 1. A client without the key pushes a pickled task (as anyone who can write to Redis could).
    forged = tmp_path / "forged-ran"
    unsigned_app.send_task("tests.touch", args=[str(forged)], queue="docs", serializer="pickle")
    # 2. Then a client with the key sends the same kind of task, signed.
    signed = tmp_path / "signed-ran"
    proc = subprocess.run(
        [sys.executable, "-c", SIGNED_CLIENT, str(signed)], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, **TEST_ENV, **stack.env, **signing},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["result"] == str(signed)
    assert signed.exists(), "the signed task ran and its signed result came back"
    # The worker takes messages in order, so the forged one was handled before the signed one.
    assert not forged.exists(), "an unsigned pickle message was executed"
    log = worker.log_text()
    assert "tests.touch" in log and ("ContentDisallowed" in log or "disallowed" in log.lower()), log[-3000:]
    assert stack.app.control.ping(destination=[worker.hostname], timeout=5) or worker.process.poll() is None
    unsigned_app.close()


# --------------------------------------------------------------------------- Flower


def test_flower_with_basic_auth_is_loopback_only_and_asks_for_credentials(make_stack):
    from docenrich.cli.redis_server import free_port

    stack = make_stack()
    port = free_port()
    env = {**os.environ, **TEST_ENV, **stack.env, "FLOWER_BASIC_AUTH": "admin:flower-secret", "FLOWER_PORT": str(port)}
    log_path = SESSION_DIR / f"flower-{stack.tag}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "docenrich.cli.flower"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def answers():
            if proc.poll() is not None:
                raise AssertionError(f"flower exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                return http_request(port, "GET", "/", timeout=5)
            except OSError:
                return None

        anonymous = wait_for(answers, 60, 0.3, "Flower to answer")
        assert anonymous.status == 401, anonymous.status
        wrong = base64.b64encode(b"admin:wrong").decode()
        assert http_request(port, "GET", "/", headers={"Authorization": f"Basic {wrong}"}).status == 401
        good = base64.b64encode(b"admin:flower-secret").decode()
        assert http_request(port, "GET", "/", headers={"Authorization": f"Basic {good}"}).status == 200
        assert http_request(port, "GET", "/api/workers").status == 401
        refused_on(other_addresses(), port)
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


# --------------------------------------------------------------------------- API token and error bodies


def test_api_token_guards_the_api_and_no_error_leaks_internals(make_stack):
    token = "t0ken-" + uuid.uuid4().hex
    stack = make_stack()
    web = stack.web("token-web", API_TOKEN=token, MAX_UPLOAD_MB=1)
    bearer = {"Authorization": f"Bearer {token}"}

    assert_clean_json_error(web.get("/api/documents"), 401)
    assert_clean_json_error(web.get("/api/documents", headers={"Authorization": "Bearer nope"}), 401)
    assert_clean_json_error(web.get("/api/documents", headers={"Authorization": f"Basic {token}"}), 401)
    assert_clean_json_error(post_pdfs(web.port, [("a.pdf", text_pdf(1, seed=1))]), 401)
    ok = web.get("/api/documents", headers=bearer)
    assert ok.status == 200 and ok.json()["documents"] == []
    page = web.get("/")
    assert page.status in (302, 401) and token not in page.text, "pages need the token too (a sign-in)"

    # Every kind of error, with a valid token: JSON, no traceback, no path, no secret.
    big = text_pdf(1, seed=2) + b"%" + b"0" * (2 << 20)
    cases = [
        ("GET", "/api/search", None, {}, 400),
        ("GET", "/api/search?q=x&k=lots", None, {}, 400),
        ("DELETE", "/api/documents/0123456789abcdef", None, {}, 404),
        ("GET", "/api/documents/0123456789abcdef/snippets?limit=-5", None, {}, 404),
        ("GET", "/api/snippets/999999/image", None, {}, 404),
        ("GET", "/api/tasks/not-a-task", None, {}, 404),  # only tasks started through the API
        ("GET", "/api/documents/0123456789abcdef/export?format=xml", None, {}, 404),
    ]
    for method, path, body, headers, status in cases:
        resp = http_request(web.port, method, path, body, {**bearer, **headers})
        if status != 200:
            assert_clean_json_error(resp, status)
        assert "Traceback" not in resp.text and str(ROOT) not in resp.text and token not in resp.text, (path, resp.text)
    for files, status in (([("big.pdf", big)], 413), ([("x.pdf", b"\x89PNG\r\n\x1a\nxx")], 415),
                          ([("e.pdf", b"")], 422), ([("t.pdf", text_pdf(3, seed=3)[:900])], 422)):
        resp = post_pdfs(web.port, files, headers=bearer)
        assert_clean_json_error(resp, status)
        assert token not in resp.text
    garbled = http_request(web.port, "POST", "/api/documents", b"--x\r\nnot multipart at all",
                           {**bearer, "Content-Type": "multipart/form-data; boundary=x"})
    assert_clean_json_error(garbled, 400)


def test_unknown_api_paths_answer_json_with_a_token_set(make_stack):
    token = "t0ken-" + uuid.uuid4().hex
    stack = make_stack()
    web = stack.web("token-404-web", API_TOKEN=token)
    bearer = {"Authorization": f"Bearer {token}"}
    assert_clean_json_error(web.get("/api/nothing", headers=bearer), 404)
    assert_clean_json_error(http_request(web.port, "PUT", "/api/documents", None, bearer), 405)
    assert_clean_json_error(web.get("/api/documents/..%2F..%2Fetc%2Fpasswd", headers=bearer), 404)
    assert_clean_json_error(web.get("/api/nothing"), 401, 404)


# --------------------------------------------------------------------------- root


def test_run_py_lets_the_worker_run_as_root_only_over_its_own_redis(tmp_path):
    """`make run` may set C_FORCE_ROOT because the Redis it starts is loopback + password; with
    REDIS_URL (someone else's Redis) that reasoning does not hold, so the worker must refuse."""
    if os.geteuid() != 0:
        pytest.skip("runs only as root (the check is about root)")
    from docenrich.cli.redis_server import free_port

    data_dir = tmp_path / f"data-{uuid.uuid4().hex}"
    env = {k: v for k, v in {**os.environ, **TEST_ENV}.items() if k != "C_FORCE_ROOT"}
    env.update(DATA_DIR=str(data_dir), WEB_PORT=str(free_port()),
               REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", WORKER_LOG_FILE=str(tmp_path / "worker.log"))
    out_path, err_path = tmp_path / "run.out", tmp_path / "run.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "docenrich.cli.run", "--no-web"], cwd=ROOT, env=env, stdout=out, stderr=err,
                                start_new_session=True)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail("make run kept a root worker running over an external REDIS_URL")
    finally:
        # make run starts the worker in a session of its own: end everything that carries our DATA_DIR.
        for pid in processes_with(str(data_dir)):
            try:
                os.killpg(os.getpgid(pid), 9)
            except ProcessLookupError:
                pass
    stderr = err_path.read_text()
    assert proc.returncode != 0
    assert "Refusing to run as root" in stderr and "worker exited with code 2" in stderr, stderr[-2000:]
