"""Gleitzeit task services in Python.

Decorate functions with ``@gleitzeit_task()`` and serve them with ``start_task_service`` (or the
``gleitzeit-service`` command); Gleitzeit workers then run a workflow's external tasks by calling
them over Socket.IO (protocol: ``gleitzeit.protocol``, ``docs/protocol.md``). Workflows can be
built in Python too (``create_workflow``) and are submitted through ``gleitzeit-submit``.
"""

from .protocol import PROTOCOL_VERSION
from .registry import (
    RegistrationError,
    Registry,
    RetryableError,
    TaskFunction,
    default_registry,
    gleitzeit_task,
)
from .service import ServiceConfigError, StopSummary, TaskService, start_task_service
from .workflow import SubmitResult, Workflow, WorkflowError, create_workflow

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "RegistrationError",
    "Registry",
    "RetryableError",
    "ServiceConfigError",
    "StopSummary",
    "SubmitResult",
    "TaskFunction",
    "TaskService",
    "Workflow",
    "WorkflowError",
    "create_workflow",
    "default_registry",
    "gleitzeit_task",
    "start_task_service",
]
