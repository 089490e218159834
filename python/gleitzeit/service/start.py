"""``start_task_service()``: serve the ``@gleitzeit_task`` functions from a program, configured
by arguments or, for every argument left out, by the environment the ``gleitzeit-service``
command reads (``settings.py``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from ..registry import TaskFunction
from . import settings
from .server import DEFAULT_MAX_CONCURRENCY, TaskService

log = logging.getLogger("gleitzeit.service")

__all__ = ["start_task_service"]


async def start_task_service(
    name: str | None = None,
    host: str | None = None,
    port: int | None = None,
    redis_url: str | None = None,
    namespace: str | None = None,
    auth_token: str | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    functions: Iterable[str | Callable[..., Any] | TaskFunction] | None = None,
    *,
    service_name: str | None = None,
    **options: Any,
) -> None:
    """Serve the ``@gleitzeit_task`` functions (or ``functions``) until SIGTERM/SIGINT or
    cancellation, then shut down cleanly (deregister, drain, close).

    With no arguments everything comes from the environment, like the ``gleitzeit-service``
    command: ``GLEITZEIT_SERVICE_NAME`` (``"Python Tasks"``), ``GLEITZEIT_SERVICE_HOST``
    (``127.0.0.1``), ``GLEITZEIT_SERVICE_PORT`` (8765; 0 picks a free port),
    ``GLEITZEIT_REDIS_URL`` (where to register; unset: not registered),
    ``GLEITZEIT_NAMESPACE`` and the token from ``GLEITZEIT_SERVICE_TOKEN`` /
    ``GLEITZEIT_SERVICE_TOKEN_FILE``. Once it listens it prints one line to stdout saying
    where it listens and where it registered. ``service_name`` is the seed's spelling of
    ``name``; ``options`` are the other ``TaskService`` keyword arguments
    (``allow_unauthenticated``, ``dedup_size``, ``advertise_host``, ...). Configuration
    problems raise ``ServiceConfigError`` before any socket opens."""
    if name is not None and service_name is not None and name != service_name:
        raise TypeError(f"name= and service_name= both given ({name!r}, {service_name!r})")
    env = settings.from_environment()
    service = TaskService(
        name if name is not None else service_name if service_name is not None else env.name,
        host if host is not None else env.host,
        port if port is not None else env.port,
        redis_url=redis_url if redis_url is not None else env.redis_url,
        namespace=namespace if namespace is not None else env.namespace,
        auth_token=auth_token,
        max_concurrency=max_concurrency,
        functions=functions,
        **options,
    )
    await service.start()
    line = settings.announcement(service.name, service.url, service.redis_url, service.namespace)
    log.info("%s", line)
    print(line, flush=True)
    await service.serve_until_signalled()
