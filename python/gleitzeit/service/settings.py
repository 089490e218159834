"""Where a task service listens and registers, from the environment: shared by the
``gleitzeit-service`` command (its option defaults) and ``start_task_service()`` (its
argument defaults), so both read the same variables the same way, and both announce where the
service listens and where it registered in the same words.

| variable | meaning | default |
| --- | --- | --- |
| ``GLEITZEIT_SERVICE_NAME`` | service name workflows use | ``Python Tasks`` |
| ``GLEITZEIT_SERVICE_HOST`` | bind address | ``127.0.0.1`` |
| ``GLEITZEIT_SERVICE_PORT`` | port (0 = a free one) | ``8765`` |
| ``GLEITZEIT_REDIS_URL`` | Redis to register in | none: not registered |
| ``GLEITZEIT_NAMESPACE`` | key namespace | ``gleitzeit`` |

The token (``GLEITZEIT_SERVICE_TOKEN`` / ``_FILE``), the advertised host and TLS files are
read by ``TaskService`` itself (``server.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .. import discovery
from ..submitter import redact_url
from .server import DEFAULT_PORT, DEFAULT_SERVICE_NAME, ServiceConfigError

ENV_NAME = "GLEITZEIT_SERVICE_NAME"
ENV_HOST = "GLEITZEIT_SERVICE_HOST"
ENV_PORT = "GLEITZEIT_SERVICE_PORT"
ENV_REDIS_URL = "GLEITZEIT_REDIS_URL"
ENV_NAMESPACE = "GLEITZEIT_NAMESPACE"
DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Settings:
    name: str
    host: str
    port: int
    redis_url: str | None
    namespace: str


def from_environment() -> Settings:
    """The settings the environment gives (defaults where a variable is unset or empty). A
    port that is not a number is a ``ServiceConfigError`` naming the variable."""
    raw_port = os.environ.get(ENV_PORT) or ""
    try:
        port = int(raw_port) if raw_port else DEFAULT_PORT
    except ValueError:
        raise ServiceConfigError(f"{ENV_PORT}={raw_port!r} is not a port number") from None
    return Settings(
        name=os.environ.get(ENV_NAME) or DEFAULT_SERVICE_NAME,
        host=os.environ.get(ENV_HOST) or DEFAULT_HOST,
        port=port,
        redis_url=os.environ.get(ENV_REDIS_URL) or None,
        namespace=os.environ.get(ENV_NAMESPACE) or discovery.DEFAULT_NAMESPACE,
    )


def announcement(name: str, url: str, redis_url: str | None, namespace: str) -> str:
    """The one line saying where a started service listens and where it registered (the
    Redis password redacted)."""
    if redis_url is None:
        where = (
            f"not registered ({ENV_REDIS_URL} is not set): workers reach it only through "
            "their external.services configuration"
        )
    else:
        where = f"registered in {redact_url(redis_url)} (namespace {namespace})"
    return f"gleitzeit service {name!r} listening on {url}, {where}"
