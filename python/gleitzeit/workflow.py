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
from dataclasses import dataclass, field
from typing import Any

from .submitter import Submitter, WorkflowError, warn_about

DEFAULT_SERVICE = "Python Tasks"

#: Keywords of the LLM task methods that are generation options (``options:`` in the file).
OPTION_KEYWORDS = frozenset(
    {"temperature", "top_p", "top_k", "max_tokens", "seed", "stop", "json"}
)

__all__ = [
    "Workflow",
    "WorkflowError",
    "SubmitResult",
    "create_workflow",
]


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
        # Set by ``GleitzeitCluster.create_workflow``: where ``submit()`` sends the workflow.
        self._bound: Submitter | None = None

    # -- tasks ---------------------------------------------------------------------------

    def _add(self, task: dict[str, Any], dependencies, extra: dict[str, Any]) -> Workflow:
        task = {k: v for k, v in task.items() if v is not None}
        if task["type"] != "external":
            # The seed passes generation options as keywords (temperature=0.1); the file
            # format keeps them under ``options``.
            moved = {k: extra.pop(k) for k in list(extra) if k in OPTION_KEYWORDS}
            if moved:
                options = dict(extra.pop("options", None) or {})
                for key, value in moved.items():
                    if key in options and options[key] != value:
                        raise TypeError(
                            f"{key}= and options={{{key!r}: ...}} both given with different "
                            "values; give one"
                        )
                    options[key] = value
                extra["options"] = options
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
        function=None,
        *,
        args=None,
        kwargs=None,
        service: str | None = None,
        dependencies=None,
        service_name: str | None = None,
        external_parameters: dict[str, Any] | None = None,
        **fields,
    ) -> Workflow:
        """A call of a ``@gleitzeit_task`` function of a task service (``"Python Tasks"`` unless
        ``service`` says otherwise).

        The seed's spelling works too: ``service_name=`` for ``service=``, and
        ``external_parameters={"function_name": ..., "args": [...], "kwargs": {...}}`` for
        ``function``, ``args=`` and ``kwargs=``. Giving one value both ways is a ``TypeError``
        naming both."""
        service = _one_of("service", service, "service_name=", service_name)
        if external_parameters is not None:
            if not isinstance(external_parameters, dict):
                raise TypeError("external_parameters must be a dict")
            unknown = sorted(set(external_parameters) - {"function_name", "args", "kwargs"})
            if unknown:
                raise TypeError(
                    f"external_parameters has unknown key(s) {', '.join(map(repr, unknown))}; "
                    "it takes 'function_name', 'args' and 'kwargs'"
                )
            function = _one_of(
                "function", function,
                "external_parameters['function_name']", external_parameters.get("function_name"),
            )
            args = _one_of(
                "args", args, "external_parameters['args']", external_parameters.get("args")
            )
            kwargs = _one_of(
                "kwargs", kwargs,
                "external_parameters['kwargs']", external_parameters.get("kwargs"),
            )
        if function is None:
            raise TypeError(
                "add_external_task() needs the function: function= (or "
                "external_parameters={'function_name': ...})"
            )
        return self._add(
            {"name": name, "type": "external", "service": service or DEFAULT_SERVICE,
             "function": function,
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
        command = _submitter_for(self._bound, submitter, None, None)
        return command.run(args, self.to_json())

    def submit_args(
        self,
        *,
        inputs: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        retention: str | None = None,
    ) -> list[str]:
        """The arguments of ``gleitzeit-submit`` submitting this workflow from stdin."""
        args = ["submit", "-", "--format", "json"] + _input_args(inputs)
        if idempotency_key:
            args += ["--idempotency-key", idempotency_key]
        if retention:
            args += ["--retention", str(retention)]
        return args

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
        args = self.submit_args(
            inputs=inputs, idempotency_key=idempotency_key, retention=retention
        )
        if wait:
            args.append("--wait")
        if timeout:
            args += ["--timeout", timeout]
        command = _submitter_for(self._bound, submitter, redis_url, namespace)
        doc = command.run(args, self.to_json())
        warn_about(doc)
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


def _one_of(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """One value given under two spellings: either, or both when they agree."""
    if value is not None and alias_value is not None and value != alias_value:
        raise TypeError(f"{name}= and {alias} both given ({value!r}, {alias_value!r}); give one")
    return value if value is not None else alias_value


def _input_args(inputs: dict[str, Any] | None) -> list[str]:
    out: list[str] = []
    for key, value in (inputs or {}).items():
        out += ["--input", f"{key}={json.dumps(value)}"]
    return out


def _submitter_for(
    bound: Submitter | None,
    path: str | None,
    redis_url: str | None,
    namespace: str | None,
) -> Submitter:
    """The command to run: arguments win over the cluster the workflow was created by."""
    if bound is None:
        return Submitter.locate(path, redis_url, namespace)
    return Submitter(
        Submitter.locate(path).path if path else bound.path,
        redis_url or bound.redis_url,
        namespace or bound.namespace,
    )
