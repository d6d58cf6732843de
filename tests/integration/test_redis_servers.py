"""Redis servers started the way `make run` starts them: loopback only with a password, output in
a log file, memory capped, the password kept off the command line, a stale server replaced."""
from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.helpers.network import other_addresses, refused_on
from tests.helpers.wait import wait_for


def test_redis_started_like_run_py_is_loopback_only_and_needs_the_password(tmp_path):
    from docenrich.cli.redis_server import RedisServer, free_port

    password = "run-py-style-secret"
    server = RedisServer(tmp_path / "redis", port=free_port(), password=password).start()
    try:
        anonymous = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5)
        with pytest.raises(redis.exceptions.AuthenticationError, match="(?i)auth"):
            anonymous.ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port, password="wrong", socket_timeout=5).ping()
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        assert client.ping()
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("protected-mode")["protected-mode"] == "yes"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        refused_on(other_addresses(), server.port)
    finally:
        server.stop()


def test_redis_server_output_goes_to_a_log_file(tmp_path):
    from docenrich.cli.redis_server import RedisServer, find_redis_server, free_port

    try:
        find_redis_server()
    except Exception as exc:
        pytest.skip(str(exc))
    with RedisServer(tmp_path / "redis", port=free_port(), password="x", persistent=False) as server:
        assert server.process.stderr is None and server.process.stdout is None
        wait_for(lambda: "Ready to accept connections" in server.log_path.read_text(errors="replace"), 10)


def test_the_redis_run_starts_is_capped_keeps_its_password_off_the_command_line(tmp_path):
    from docenrich.cli.redis_server import RedisServer, free_port

    port = free_port()
    password = 's3cret pw#"x'  # what a config file must quote
    first = RedisServer(tmp_path / "redis", port=port, password=password, maxmemory="64mb").start()
    try:
        cmdline = Path(f"/proc/{first.process.pid}/cmdline").read_bytes()
        assert b"s3cret" not in cmdline
        assert first.conf_path.stat().st_mode & 0o777 == 0o600
        client = redis.Redis.from_url(first.url)
        assert client.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        client.set("survives", "yes")
        # A run that died left this server behind: the next one stops it instead of refusing the port.
        second = RedisServer(tmp_path / "redis", port=port, password=password, maxmemory="64mb").start()
        try:
            assert first.process.wait(10) == 0, "the stale server was stopped cleanly"
            assert redis.Redis.from_url(second.url).get("survives") == b"yes", "its data was kept"
        finally:
            second.stop()
    finally:
        first.stop()
