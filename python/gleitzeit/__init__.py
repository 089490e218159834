"""Gleitzeit from Python: workflows, results by id, endpoints, and task services.

``GleitzeitCluster`` is the front door: ``cluster.create_workflow(...)`` builds a workflow,
``cluster.submit`` / ``wait`` / ``get`` / ``status`` / ``results`` / ``cancel`` (and their
``_async`` forms) work on workflows by id, and ``EndpointConfig`` / ``LoadBalancingStrategy``
given to it are published to the worker fleet. Everything goes through the
``gleitzeit-submit`` command, the one implementation of the rules.

Decorate functions with ``@gleitzeit_task()`` and serve them with ``start_task_service()`` (or
the ``gleitzeit-service`` command); Gleitzeit workers then run a workflow's external tasks by
calling them over Socket.IO (protocol: ``gleitzeit.protocol``, ``docs/protocol.md``).
"""

from .cluster import EndpointError, GleitzeitCluster
from .endpoints import EndpointConfig, LoadBalancingStrategy
from .protocol import PROTOCOL_VERSION
from .registry import (
    RegistrationError,
    Registry,
    RetryableError,
    TaskFunction,
    default_registry,
    gleitzeit_task,
)
from .runs import (
    CancelResult,
    TaskError,
    TaskResult,
    TaskStatus,
    WorkflowFailed,
    WorkflowResult,
    WorkflowStatus,
    WorkflowTimeout,
)
from .service import ServiceConfigError, StopSummary, TaskService, start_task_service
from .submitter import GleitzeitWarning, SubmitterNotFound, WorkflowError
from .workflow import SubmitResult, Workflow, create_workflow

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "CancelResult",
    "EndpointConfig",
    "EndpointError",
    "GleitzeitCluster",
    "GleitzeitWarning",
    "LoadBalancingStrategy",
    "RegistrationError",
    "Registry",
    "RetryableError",
    "ServiceConfigError",
    "StopSummary",
    "SubmitResult",
    "SubmitterNotFound",
    "TaskError",
    "TaskFunction",
    "TaskResult",
    "TaskService",
    "TaskStatus",
    "Workflow",
    "WorkflowError",
    "WorkflowFailed",
    "WorkflowResult",
    "WorkflowStatus",
    "WorkflowTimeout",
    "create_workflow",
    "default_registry",
    "gleitzeit_task",
    "start_task_service",
]
