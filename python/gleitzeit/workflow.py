"""Build workflows in Python and submit them.

The rules of a workflow (schema, names, dependencies, cycles, templates, limits) live in one
place: the Rust ``gleitzeit-submit`` command. This module only builds the workflow document
and hands it to that command (``gleitzeit-submit submit - --json`` with the JSON on stdin), so
a workflow built here is validated and written exactly like a workflow file.

    from gleitzeit import create_workflow

    wf = create_workflow("Pipeline", input={"numbers": [3, 1, 2]})
    wf.add_external_task("Process", "process_data", args=["{{input.numbers}}"])
    wf.add_text_task("Explain", "Explain: {{Process.result}}", model="smollm2",
                     dependencies=["Process"])
    run = wf.submit(wait=True, timeout="5m")
    print(run.status, run.results["Explain"]["result"])

The command is found through ``GLEITZEIT_SUBMIT`` (a path) or ``gleitzeit-submit`` on PATH;
Redis through ``redis_url=`` or ``GLEITZEIT_REDIS_URL``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SERVICE = "Python Tasks"

__all__ = [
    "Workflow",
    "WorkflowError",
    "SubmitResult",
    "create_workflow",
]


class WorkflowError(Exception):
    """The submitter refused the workflow or could not run it.

    ``kind`` is the submitter's error kind (``invalid``, ``unreachable``, ``conflict``,
    ``not_found``, ``usage``, ``internal``), ``errors`` every validation problem as
    ``{"path", "kind", "message"}``, ``exit_code`` the command's exit code.
    """

    def __init__(self, message: str, kind: str, exit_code: int, errors: list | None = None):
        super().__init__(message)
        self.kind = kind
        self.exit_code = exit_code
        self.errors = errors or []

    def __str__(self) -> str:
        lines = [super().__str__()]
        lines += [f"  {e.get('path', '')}: {e.get('message', '')}" for e in self.errors]
        return "\n".join(lines)


@dataclass
class SubmitResult:
    """What ``submit`` returned: the workflow id, its status, and with ``wait=True`` the results
    (``{task name: {"status", "result", "error", "meta"}}``)."""

    id: str
    status: str
    existing: bool = False
    timed_out: bool = False
    results: dict[str, Any] = field(default_factory=dict)


class Workflow:
    """A workflow under construction; ``to_dict()`` is the same document as a workflow file."""

    def __init__(
        self,
        name: str,
        *,
        description: str | None = None,
        input: dict[str, Any] | None = None,
        failure_policy: str | None = None,
        retention: str | int | None = None,
        defaults: dict[str, Any] | None = None,
    ):
        self._doc: dict[str, Any] = {"name": name, "tasks": []}
        if description is not None:
            self._doc["description"] = description
        if input is not None:
            self._doc["input"] = dict(input)
        if failure_policy is not None:
            self._doc["failure_policy"] = failure_policy
        if retention is not None:
            # How long results stay in Redis after the end ("2h", or seconds).
            self._doc["retention"] = retention
        if defaults is not None:
            self._doc["defaults"] = dict(defaults)

    # -- tasks ---------------------------------------------------------------------------

    def _add(self, task: dict[str, Any], dependencies, extra: dict[str, Any]) -> Workflow:
        task = {k: v for k, v in task.items() if v is not None}
        if dependencies:
            task["dependencies"] = list(dependencies)
        # Further task fields (retry, timeout, priority, on_failure, options, system, ...) are
        # passed through as written; the submitter checks them.
        task.update(extra)
        self._doc["tasks"].append(task)
        return self

    def add_text_task(self, name, prompt, *, model=None, dependencies=None, **fields) -> Workflow:
        """A text generation task; ``model`` may come from ``defaults``."""
        return self._add(
            {"name": name, "type": "text", "model": model, "prompt": prompt},
            dependencies,
            fields,
        )

    def add_chat_task(self, name, messages, *, model=None, dependencies=None, **fields) -> Workflow:
        """A chat task; ``messages`` is a list of ``{"role", "content"}``."""
        return self._add(
            {"name": name, "type": "chat", "model": model, "messages": list(messages)},
            dependencies,
            fields,
        )

    def add_vision_task(
        self, name, prompt, images, *, model=None, dependencies=None, **fields
    ) -> Workflow:
        """A vision task; ``images`` are base64 strings or data URLs."""
        return self._add(
            {"name": name, "type": "vision", "model": model, "prompt": prompt,
             "images": list(images)},
            dependencies,
            fields,
        )

    def add_embed_task(self, name, text, *, model=None, dependencies=None, **fields) -> Workflow:
        """An embedding task; the result is the vector."""
        return self._add(
            {"name": name, "type": "embed", "model": model, "prompt": text},
            dependencies,
            fields,
        )

    def add_external_task(
        self,
        name,
        function,
        *,
        args=None,
        kwargs=None,
        service: str = DEFAULT_SERVICE,
        dependencies=None,
        **fields,
    ) -> Workflow:
        """A call of a ``@gleitzeit_task`` function of a task service."""
        return self._add(
            {"name": name, "type": "external", "service": service, "function": function,
             "args": list(args) if args is not None else None,
             "kwargs": dict(kwargs) if kwargs is not None else None},
            dependencies,
            fields,
        )

    def add_dependency(self, task: str, depends_on: str) -> Workflow:
        """Makes ``task`` depend on ``depends_on`` (both added already)."""
        for t in self._doc["tasks"]:
            if t["name"] == task:
                deps = t.setdefault("dependencies", [])
                if depends_on not in deps:
                    deps.append(depends_on)
                return self
        raise KeyError(f"no task named {task!r} in this workflow")

    # -- documents -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._doc)

    def to_json(self) -> str:
        return json.dumps(self._doc)

    # -- the submitter -------------------------------------------------------------------

    def validate(self, *, inputs: dict[str, Any] | None = None, submitter: str | None = None) -> dict:
        """Validates without touching Redis; returns the summary
        (``{"valid", "name", "tasks", "roots", "capabilities"}``) or raises ``WorkflowError``
        listing every problem."""
        args = ["validate", "-", "--format", "json"] + _input_args(inputs)
        return _run(submitter, args, self.to_json(), redis_url=None, namespace=None)

    def submit(
        self,
        *,
        wait: bool = False,
        timeout: str | None = None,
        inputs: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        retention: str | None = None,
        redis_url: str | None = None,
        namespace: str | None = None,
        submitter: str | None = None,
    ) -> SubmitResult:
        """Validates and submits in one atomic step; with ``wait=True`` follows the workflow
        to its end (``timeout`` like ``"5m"``) and returns its results. A workflow that failed
        is returned with ``status == "failed"``, not raised. ``retention`` (like ``"30m"``)
        applies when the workflow sets none. A full Redis raises ``WorkflowError`` with
        ``kind == "redis_full"`` (exit code 11) and nothing written."""
        args = ["submit", "-", "--format", "json"] + _input_args(inputs)
        if idempotency_key:
            args += ["--idempotency-key", idempotency_key]
        if retention:
            args += ["--retention", str(retention)]
        if wait:
            args.append("--wait")
        if timeout:
            args += ["--timeout", timeout]
        doc = _run(submitter, args, self.to_json(), redis_url=redis_url, namespace=namespace)
        return SubmitResult(
            id=doc["id"],
            status=doc["status"],
            existing=bool(doc.get("existing", False)),
            timed_out=bool(doc.get("timed_out", False)),
            results=doc.get("results") or {},
        )


def create_workflow(name: str, **options) -> Workflow:
    """A new, empty workflow (the seed's entry point); options as for ``Workflow``."""
    return Workflow(name, **options)


def _input_args(inputs: dict[str, Any] | None) -> list[str]:
    out: list[str] = []
    for key, value in (inputs or {}).items():
        out += ["--input", f"{key}={json.dumps(value)}"]
    return out


def _submitter(explicit: str | None) -> str:
    path = explicit or os.environ.get("GLEITZEIT_SUBMIT") or shutil.which("gleitzeit-submit")
    if not path:
        raise WorkflowError(
            "gleitzeit-submit not found: install it on PATH or set GLEITZEIT_SUBMIT",
            kind="usage",
            exit_code=2,
        )
    return path


def _run(submitter, args, stdin: str, *, redis_url, namespace) -> dict:
    cmd = [_submitter(submitter), "--json"]
    if redis_url:
        cmd += ["--redis-url", redis_url]
    if namespace:
        cmd += ["--namespace", namespace]
    proc = subprocess.run(cmd + args, input=stdin, capture_output=True, text=True, check=False)
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except json.JSONDecodeError:
        doc = {}
    if "error" in doc:
        err = doc["error"]
        raise WorkflowError(
            err.get("message", "gleitzeit-submit failed"),
            kind=err.get("kind", "internal"),
            exit_code=int(err.get("exit_code", proc.returncode)),
            errors=err.get("errors"),
        )
    # Exit 4 (workflow failed or cancelled) and 7 (wait timed out) still carry a document.
    if proc.returncode not in (0, 4, 7) or not doc:
        raise WorkflowError(
            f"gleitzeit-submit exited {proc.returncode}: {proc.stderr.strip()[-2000:]}",
            kind="internal",
            exit_code=proc.returncode,
        )
    return doc
