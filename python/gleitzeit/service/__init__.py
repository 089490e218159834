"""Running task services: ``TaskService``, ``start_task_service`` and the ``gleitzeit-service``
command (``python -m gleitzeit.service``)."""

from .server import (
    ServiceConfigError,
    StopSummary,
    TaskService,
    resolve_token,
)
from .start import start_task_service

__all__ = [
    "ServiceConfigError",
    "StopSummary",
    "TaskService",
    "resolve_token",
    "start_task_service",
]
