"""``start_task_service()`` and the ``gleitzeit-service`` command configured by the same
environment (``gleitzeit.service.settings``), and the line a started service prints."""

from __future__ import annotations

import pytest

from conftest import TOKEN
from fleet import Fleet
from gleitzeit.service import ServiceConfigError, cli, settings


def test_the_command_and_the_function_read_the_same_variables(monkeypatch):
    monkeypatch.setenv("GLEITZEIT_SERVICE_NAME", "Env Tasks")
    monkeypatch.setenv("GLEITZEIT_SERVICE_HOST", "0.0.0.0")
    monkeypatch.setenv("GLEITZEIT_SERVICE_PORT", "0")
    monkeypatch.setenv("GLEITZEIT_REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("GLEITZEIT_NAMESPACE", "envns")
    env = settings.from_environment()
    assert env == settings.Settings("Env Tasks", "0.0.0.0", 0, "redis://r:6379/0", "envns")
    args = cli.build_parser().parse_args(["taskfns"])
    assert (args.name, args.host, args.port, args.redis_url, args.namespace) == (
        "Env Tasks", "0.0.0.0", 0, "redis://r:6379/0", "envns"
    )
    # Options still win over the environment.
    assert cli.build_parser().parse_args(["--port", "9", "taskfns"]).port == 9


def test_defaults_without_the_environment():
    env = settings.from_environment()
    assert env == settings.Settings("Python Tasks", "127.0.0.1", 8765, None, "gleitzeit")


def test_a_bad_port_names_the_variable(monkeypatch):
    monkeypatch.setenv("GLEITZEIT_SERVICE_PORT", "eighty")
    with pytest.raises(ServiceConfigError, match="GLEITZEIT_SERVICE_PORT='eighty'"):
        settings.from_environment()
    assert cli.main(["taskfns"]) == cli.EXIT_USAGE


def test_the_announcement_redacts_the_password():
    line = settings.announcement(
        "Python Tasks", "http://10.0.0.5:8765", "redis://app:s3cret@redis:6379/0", "prod"
    )
    assert line == (
        "gleitzeit service 'Python Tasks' listening on http://10.0.0.5:8765, "
        "registered in redis://app:***@redis:6379/0 (namespace prod)"
    )
    assert "s3cret" not in line


def test_without_a_redis_url_the_service_says_it_is_not_registered(redis_server):
    fleet = Fleet(redis_server.url, "gleitzeit", TOKEN)
    try:
        child = fleet.python(
            "seed_service.py",
            {"GLEITZEIT_SERVICE_TOKEN": TOKEN, "GLEITZEIT_SERVICE_PORT": "0"},
        )
        line = child.readline()
    finally:
        fleet.stop()
    assert line.startswith("gleitzeit service 'Python Tasks' listening on http://127.0.0.1:")
    assert "not registered (GLEITZEIT_REDIS_URL is not set)" in line
