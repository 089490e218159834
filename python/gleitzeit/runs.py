"""Typed views of a workflow read back by id: its status, each task's result or failure, and
the errors a wait raises. They are built from the JSON documents of ``gleitzeit-submit
status|results|cancel|watch --json`` (a stable contract whose fields are only ever added;
each view keeps the document it came from as ``raw``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .submitter import WorkflowError

#: Workflow statuses after which nothing changes any more.
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})

__all__ = [
    "CancelResult",
    "TaskError",
    "TaskResult",
    "TaskStatus",
    "WorkflowFailed",
    "WorkflowResult",
    "WorkflowStatus",
    "WorkflowTimeout",
]


@dataclass(frozen=True)
class TaskError:
    """Why a task failed: ``kind`` (``retryable``, ``permanent``, ``timeout``, ``poison``,
    ``cancelled``), ``message`` and the worker's ``detail``. For an external task whose
    function raised, ``type`` is the Python exception's type and ``traceback`` its traceback
    as the task service reported it."""

    kind: str
    message: str
    detail: Any = None

    @property
    def type(self) -> str | None:
        return self.detail.get("type") if isinstance(self.detail, dict) else None

    @property
    def traceback(self) -> str | None:
        return self.detail.get("traceback") if isinstance(self.detail, dict) else None

    @classmethod
    def from_json(cls, doc: Any) -> TaskError | None:
        if doc is None:
            return None
        if not isinstance(doc, dict):
            return cls(kind="unknown", message=str(doc))
        return cls(
            kind=str(doc.get("kind", "unknown")),
            message=str(doc.get("message", "")),
            detail=doc.get("detail"),
        )

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(frozen=True)
class TaskResult:
    """One task in ``results``: its ``status``, its ``result`` (text for LLM tasks, a vector
    for embeddings, any JSON for external tasks; ``None`` until it completed), its ``error``,
    ``meta`` (model, endpoint, tokens, timings) and, for a skipped or cancelled task, the
    ``reason`` it never ran."""

    name: str
    status: str
    result: Any = None
    error: TaskError | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @classmethod
    def from_json(cls, name: str, doc: dict[str, Any]) -> TaskResult:
        return cls(
            name=name,
            status=str(doc.get("status", "unknown")),
            result=doc.get("result"),
            error=TaskError.from_json(doc.get("error")),
            meta=dict(doc.get("meta") or {}),
            reason=doc.get("reason"),
        )


def parse_results(doc: dict[str, Any]) -> dict[str, TaskResult]:
    """``results --json`` as ``{task name: TaskResult}`` in workflow order."""
    return {name: TaskResult.from_json(name, value) for name, value in doc.items()}


@dataclass(frozen=True)
class TaskStatus:
    """One task in ``status``; ``attempts`` counts failed attempts; ``reason`` says why a
    skipped or cancelled task never ran."""

    index: int
    name: str
    capability: str
    status: str
    attempts: int
    max_attempts: int
    error: TaskError | None
    started_ms: int | None
    finished_ms: int | None
    reason: str | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TaskStatus:
        return cls(
            index=int(doc.get("index", 0)),
            name=str(doc.get("name", "")),
            capability=str(doc.get("capability", "")),
            status=str(doc.get("status", "unknown")),
            attempts=int(doc.get("attempts", 0)),
            max_attempts=int(doc.get("max_attempts", 0)),
            error=TaskError.from_json(doc.get("error")),
            started_ms=doc.get("started_ms"),
            finished_ms=doc.get("finished_ms"),
            reason=doc.get("reason"),
        )


@dataclass(frozen=True)
class WorkflowStatus:
    """A workflow's record and its tasks (``status --json``)."""

    id: str
    name: str
    status: str
    policy: str
    total: int
    open: int
    completed: int
    failed: int
    skipped: int
    cancelled: int
    created_ms: int | None
    finished_ms: int | None
    tasks: list[TaskStatus]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> WorkflowStatus:
        def count(key: str) -> int:
            return int(doc.get(key) or 0)

        return cls(
            id=str(doc.get("id", "")),
            name=str(doc.get("name", "")),
            status=str(doc.get("status", "unknown")),
            policy=str(doc.get("policy", "")),
            total=count("total"),
            open=count("open"),
            completed=count("completed"),
            failed=count("failed"),
            skipped=count("skipped"),
            cancelled=count("cancelled"),
            created_ms=doc.get("created_ms"),
            finished_ms=doc.get("finished_ms"),
            tasks=[TaskStatus.from_json(t) for t in doc.get("tasks") or []],
            raw=doc,
        )


@dataclass(frozen=True)
class WorkflowResult:
    """A workflow read back by id (``get``, ``wait``): its ``status``, ``tasks`` as
    ``{name: TaskResult}`` and ``results`` as ``{name: value}`` (the seed's
    ``result.results["Task"]``; ``None`` for a task without a result)."""

    id: str
    name: str
    status: str
    tasks: dict[str, TaskResult]
    workflow: WorkflowStatus

    @property
    def results(self) -> dict[str, Any]:
        return {name: task.result for name, task in self.tasks.items()}

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def errors(self) -> dict[str, TaskError]:
        """The tasks that carry an error, by name."""
        return {n: t.error for n, t in self.tasks.items() if t.error is not None}

    def raise_for_status(self) -> WorkflowResult:
        """Raises ``WorkflowFailed`` when the workflow failed or was cancelled; returns
        ``self`` otherwise (also while it is still running)."""
        if self.status in ("failed", "cancelled"):
            raise WorkflowFailed(self)
        return self


@dataclass(frozen=True)
class CancelResult:
    """What ``cancel`` did: ``outcome`` ``cancelled`` or ``already_finished``, and the
    workflow's ``status`` afterwards."""

    id: str
    outcome: str
    status: str

    @property
    def cancelled(self) -> bool:
        return self.outcome == "cancelled"

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CancelResult:
        return cls(
            id=str(doc.get("id", "")),
            outcome=str(doc.get("outcome", "")),
            status=str(doc.get("status", "")),
        )


class WorkflowFailed(WorkflowError):
    """A workflow ended ``failed`` or ``cancelled`` and the caller asked to raise
    (``wait(..., raise_on_failure=True)``, ``raise_for_status()``). ``result`` is the whole
    ``WorkflowResult``; the message names each failed task with its error (and the last line
    of a Python traceback)."""

    def __init__(self, result: WorkflowResult):
        lines = [f"workflow {result.id} ({result.name}) {result.status}"]
        for name, error in result.errors.items():
            line = f"  {name}: {error}"
            if error.traceback:
                last = error.traceback.strip().splitlines()[-1]
                line += f" [{last}]"
            lines.append(line)
        super().__init__("\n".join(lines), kind=result.status, exit_code=4)
        self.result = result


class WorkflowTimeout(WorkflowError, TimeoutError):
    """``wait(..., timeout=...)`` ran out; the workflow keeps running. ``status`` is its
    status when waiting ended."""

    def __init__(self, workflow_id: str, status: str):
        super().__init__(
            f"workflow {workflow_id} still {status} when the wait timed out",
            kind="timeout",
            exit_code=7,
        )
        self.id = workflow_id
        self.status = status
