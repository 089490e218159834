"""Service configuration: validated before any socket opens; tokens from param, env or file."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from gleitzeit import ServiceConfigError, TaskService
from gleitzeit.service import resolve_token


def make(**kwargs):
    kwargs.setdefault("port", 0)
    kwargs.setdefault("functions", ["process_data"])
    return TaskService(**kwargs)


def test_no_token_refuses_to_start():
    with pytest.raises(ServiceConfigError, match="no service token configured"):
        make()


def test_allow_unauthenticated_is_explicit_and_logged_loudly(caplog):
    service = make(allow_unauthenticated=True)
    assert service.allow_unauthenticated is True


async def test_unauthenticated_start_logs_a_warning(caplog):
    service = make(allow_unauthenticated=True)
    with caplog.at_level(logging.WARNING, logger="gleitzeit.service"):
        await service.start()
        await service.stop()
    assert any("UNAUTHENTICATED" in r.getMessage() for r in caplog.records)


def test_token_precedence(monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("GLEITZEIT_SERVICE_TOKEN_FILE", str(token_file))
    assert resolve_token(None) == "from-file"
    monkeypatch.setenv("GLEITZEIT_SERVICE_TOKEN", "from-env")
    assert resolve_token(None) == "from-env"
    assert resolve_token("explicit") == "explicit"


def test_token_errors(monkeypatch, tmp_path):
    with pytest.raises(ServiceConfigError, match="non-empty"):
        resolve_token("   ")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    monkeypatch.setenv("GLEITZEIT_SERVICE_TOKEN_FILE", str(empty))
    with pytest.raises(ServiceConfigError, match="is empty"):
        resolve_token(None)
    monkeypatch.setenv("GLEITZEIT_SERVICE_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ServiceConfigError, match="cannot read"):
        resolve_token(None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "a{b"}, "service name"),
        ({"name": ""}, "service name"),
        ({"namespace": "two words"}, "whitespace"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"dedup_size": -1}, "dedup_size"),
        ({"max_message_size": 0}, "max_message_size"),
        ({"port": 70000}, "port"),
        ({"registration_ttl": 0}, "registration_ttl"),
        ({"drain_timeout": -1}, "drain_timeout"),
        ({"redis_url": ""}, "redis_url"),
        ({"redis_url": "http://localhost:6379"}, "redis_url"),
        ({"redis_url": "redis+sentinel://s1,s2"}, "service name"),
        ({"redis_url": "http://:hunter2@localhost:6379"}, r"http://:\*\*\*@localhost"),
        ({"functions": []}, "no functions"),
    ],
)
def test_invalid_settings(kwargs, message):
    with pytest.raises(ServiceConfigError, match=message):
        make(auth_token="t", **kwargs)


def test_advertised_url(monkeypatch):
    import socket

    assert make(auth_token="t", host="0.0.0.0").advertised_host == socket.gethostname()
    assert make(auth_token="t", advertise_host="tasks.internal").advertised_host == "tasks.internal"
    monkeypatch.setenv("GLEITZEIT_SERVICE_ADVERTISE", "from-env")
    assert make(auth_token="t").advertised_host == "from-env"
    assert make(auth_token="t", advertise_host="param").advertised_host == "param"


async def test_port_zero_picks_a_free_port_and_url_uses_it():
    service = make(auth_token="t", advertise_host="svc.local")
    await service.start()
    try:
        assert service.port > 0
        assert service.url == f"http://svc.local:{service.port}"
        url = f"http://127.0.0.1:{service.port}/healthz"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            body = await response.json()
        assert body == {
            "service": "Python Tasks",
            "instance": service.instance_id,
            "accepting": True,
        }
    finally:
        await service.stop()
