"""Trust rules that need no server: where sign-in may redirect, which Host names are served,
errors that name no host, user or path, highlighting that escapes first, secrets written once to
.env, and the entry points that refuse to start unsafely (Flower without auth, a root worker)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from docenrich.web.trust import allowed_hosts, host_name, safe_next
from tests.helpers.env import ROOT, TEST_ENV


@pytest.mark.parametrize("target", ["/%09/evil.example", "/\t/evil.example", "//evil.example", "/\\evil.example",
                                    "https://evil.example/", "javascript:alert(1)", "", None, " /x", "/\n/evil"])
def test_next_leaves_nothing_but_local_paths(target):
    assert safe_next(target) == "/"


def test_next_keeps_a_local_path_with_its_query():
    assert safe_next("/search?q=a%20b&k=5") == "/search?q=a%20b&k=5"


def test_allowed_hosts_default_to_loopback_names_on_loopback():
    assert allowed_hosts("", "127.0.0.1") == {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts("", "0.0.0.0") is None
    assert allowed_hosts("docs.example.org, Other.example", "0.0.0.0") == {"docs.example.org", "other.example"}
    assert allowed_hosts("*", "127.0.0.1") is None
    assert [host_name(h) for h in ("LocalHost:5000", "[::1]:5000", "127.0.0.1", "::1")] == [
        "localhost", "::1", "127.0.0.1", "::1"]


def test_storage_errors_name_no_host_user_or_path(tmp_path):
    from docenrich.storage import SQLiteStore, StorageError
    from docenrich.storage.postgres import PostgresStore

    with pytest.raises(StorageError) as refused:
        PostgresStore("postgresql://alice:pw@127.0.0.1:1/secretdb")
    assert not any(word in str(refused.value) for word in ("alice", "127.0.0.1", "secretdb")), refused.value
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where DATA_DIR should be")
    with pytest.raises(StorageError) as unwritable:
        SQLiteStore(blocker / "data")
    assert str(tmp_path) not in str(unwritable.value), unwritable.value


def test_ensure_env_secret_generates_once_then_reuses(tmp_path, monkeypatch):
    from docenrich.cli import run

    env_file = tmp_path / ".env"
    env_file.write_text("# settings\nWEB_PORT=5001")  # no trailing newline
    monkeypatch.setattr(run, "ENV_FILE", env_file)
    monkeypatch.delenv("DOCENRICH_TEST_SECRET", raising=False)

    first = run.ensure_env_secret("DOCENRICH_TEST_SECRET")
    assert len(first) >= 32
    text = env_file.read_text()
    assert f"\nDOCENRICH_TEST_SECRET={first}\n" in text and text.startswith("# settings\nWEB_PORT=5001\n")
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600, "the .env holding secrets is private"
    assert run.ensure_env_secret("DOCENRICH_TEST_SECRET") == first
    assert env_file.read_text() == text, "the second run reuses the secret and writes nothing"
    monkeypatch.setenv("DOCENRICH_TEST_SECRET", "from-the-environment")
    assert run.ensure_env_secret("DOCENRICH_TEST_SECRET") == "from-the-environment"
    assert env_file.read_text() == text

    fresh = tmp_path / "fresh.env"
    monkeypatch.setattr(run, "ENV_FILE", fresh)
    monkeypatch.delenv("DOCENRICH_TEST_SECRET")
    other = run.ensure_env_secret("DOCENRICH_TEST_SECRET")
    assert other != first and fresh.read_text().endswith(f"DOCENRICH_TEST_SECRET={other}\n")


def test_flower_refuses_to_start_without_basic_auth():
    env = {**os.environ, **TEST_ENV, "FLOWER_BASIC_AUTH": ""}
    proc = subprocess.run([sys.executable, "-m", "docenrich.cli.flower"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "FLOWER_BASIC_AUTH" in proc.stderr, proc.stderr


def test_worker_refuses_to_run_as_root_without_c_force_root():
    if os.geteuid() != 0:
        pytest.skip("runs only as root (the check is about root)")
    env = {k: v for k, v in {**os.environ, **TEST_ENV}.items() if k != "C_FORCE_ROOT"}
    proc = subprocess.run([sys.executable, "start_celery_worker.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Refusing to run as root" in proc.stderr and "C_FORCE_ROOT" in proc.stderr
def test_highlight_escapes_before_marking():
    from app import highlight

    out = str(highlight("<script>alert(1)</script> Script & more", "script"))
    assert out == "&lt;<mark>script</mark>&gt;alert(1)&lt;/<mark>script</mark>&gt; <mark>Script</mark> &amp; more"
    # Words are marked by their stems, as the lexical index matched them.
    assert str(highlight("Compute the roots of c.", "computing root")) == \
        "<mark>Compute</mark> the <mark>roots</mark> of c."
